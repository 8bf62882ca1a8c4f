"""`unetkit data from-one IMAGE MASK --out DIR -n 200`: one annotated picture -> an augmented data set;
`unetkit data synthetic NAME --out DIR -n 20`: a built-in synthetic set written as a folder data set.
"""

from __future__ import annotations

import argparse

from unetkit._fs import check_outputs, public_mode

__all__ = ["add_parser"]


def _from_one(args: argparse.Namespace) -> int:
    from unetkit.data.from_one import make_dataset_from_one

    check_outputs(folders={"--out": args.out}, inputs=[args.image, args.mask])
    out = make_dataset_from_one(args.image, args.mask, args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} image/mask pairs to {out}/images and {out}/masks")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from unetkit.data.io import write_image
    from unetkit.data.synthetic import make_synthetic

    if args.start < 0:
        raise ValueError(f"`--start` must be >= 0, got {args.start}")
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new --out folder")
    data, info = make_synthetic(args.name, args.start + args.n, args.size, seed=args.seed)
    data = data.subset(list(range(args.start, args.start + args.n)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        for i, name in enumerate(data.names):
            image = np.clip(np.round(np.moveaxis(data.images[i], 0, -1) * 255), 0, 255).astype(np.uint8)
            write_image(tmp / "images" / f"{name}.png", image[..., 0] if image.shape[-1] == 1 else image)
            if args.instances and data.instances is not None:  # instance labels: 16-bit PNG
                write_image(tmp / "masks" / f"{name}.png", data.instances[i].astype(np.uint16))
            else:
                write_image(tmp / "masks" / f"{name}.png", (data.targets[i] > 0).astype(np.uint8) * 255)
            if data.fov is not None:
                write_image(tmp / "fov" / f"{name}.png", data.fov[i].astype(np.uint8) * 255)
        public_mode(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    what = "instance-label" if args.instances and data.instances is not None else "binary (0/255)"
    print(f"wrote {args.n} {args.name} images with {what} masks to {out}/images and {out}/masks ({info.mode})")
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
    syn = verbs.add_parser(
        "synthetic",
        help="write a built-in synthetic set as a folder (images/, masks/[, fov/])",
        description="Images `start .. start + n - 1` of the deterministic synthetic sequence (the training "
        "runs on synthetic:NAME use its first train + val images).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    syn.add_argument("name", choices=("cells", "vessels", "shapes"), help="which set")
    syn.add_argument("--out", required=True, help="new folder to write")
    syn.add_argument("-n", type=int, default=20, help="images to write")
    syn.add_argument("--start", type=int, default=0, help="index of the first image")
    syn.add_argument("--size", type=int, default=128, help="image side")
    syn.add_argument("--seed", type=int, default=0, help="data seed (training uses 0)")
    syn.add_argument("--instances", action="store_true", help="cells: write instance labels, not binary masks")
    syn.set_defaults(func=_synthetic)
