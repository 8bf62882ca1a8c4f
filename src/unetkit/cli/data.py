"""`unetkit data from-one IMAGE MASK --out DIR -n 200`: one annotated picture -> an augmented data set."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _from_one(args: argparse.Namespace) -> int:
    from unetkit.data.from_one import make_dataset_from_one

    out = make_dataset_from_one(args.image, args.mask, args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} image/mask pairs to {out}/images and {out}/masks")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="make data sets", description="Data set tools.")
    verbs = parser.add_subparsers(dest="data_command", metavar="VERB", required=True)
    one = verbs.add_parser(
        "from-one",
        help="augment one annotated image into a data set",
        description="Elastic deformation, flips, rotations and intensity changes of one image and its mask.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    one.add_argument("image", help="the image file")
    one.add_argument("mask", help="its mask (binary or class indices)")
    one.add_argument("--out", required=True, help="new folder to write (images/ and masks/)")
    one.add_argument("-n", type=int, default=200, help="pairs to write")
    one.add_argument("--size", type=int, default=None, help="random crops of this side")
    one.add_argument("--seed", type=int, default=0, help="random seed")
    one.set_defaults(func=_from_one)
