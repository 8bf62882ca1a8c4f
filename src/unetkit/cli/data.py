"""`unetkit data from-one IMAGE MASK --out DIR -n 200`: one annotated picture -> an augmented data set;
`unetkit data synthetic NAME --out DIR -n 20`: a built-in synthetic set written as a folder data set;
`unetkit data realistic NAME --out DIR`: a generated set stored the way real ones come (uint16 nuclei with
instance-label TIFFs, VOC palette masks with 255 borders, 12-bit PNGs, float32 CT-like TIFFs);
`unetkit data inspect DIR`: the folder's fingerprint as a table (and JSON) and the plan `train` would use.
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


def _realistic(args: argparse.Namespace) -> int:
    from unetkit.data.realistic import write_realistic

    out = write_realistic(args.name, args.out, n=args.n, seed=args.seed)
    if args.name in ("tiles", "stacks"):
        print(f"wrote {args.n} {args.name} to {out}/train and held-out ones to {out}/test (images/, masks/)")
    else:
        print(f"wrote {args.n} {args.name} images to {out}/images and their masks to {out}/masks")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from unetkit._fs import atomic_write_bytes
    from unetkit.data.fingerprint import fingerprint_folder
    from unetkit.train.config import TrainConfig
    from unetkit.train.plan import make_plan

    if args.json is not None:  # before reading: the JSON may not land on (or in) the data set it describes
        check_outputs(files={"--json": args.json}, trees=[args.dir])
    fingerprint, _, _ = fingerprint_folder(
        args.dir, mask_mode=args.mask_mode, ignore_index=args.ignore_index, normalize=args.normalize
    )
    print(fingerprint.table())
    config = TrainConfig(data=str(args.dir), out="unused", device=args.device, time_budget=args.time_budget or "",
                         mask_mode=args.mask_mode, ignore_index=args.ignore_index).validate()  # fmt: skip
    given = {"mask_mode"} if args.mask_mode != "auto" else set()
    _, plan = make_plan(config, fingerprint.to_dict(), given=given, measure=not args.no_timing)
    print("\nthe plan `unetkit train --data DIR` would use:")
    for line in plan.lines():
        print("  " + line.removeprefix("plan: "))
    if args.json is not None:
        payload = {"fingerprint": fingerprint.to_dict(), "plan": plan.to_dict() | {"fingerprint": None}}
        atomic_write_bytes(Path(args.json), (json.dumps(payload, indent=2, default=str) + "\n").encode("utf-8"))
        print(f"wrote {args.json}")
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
    real = verbs.add_parser(
        "realistic",
        help="write a generated set stored as real ones are (dtypes, palettes, ignore borders)",
        description="nuclei: uint16 low-range TIFFs with uint16 instance-label masks; voc: JPEG photos with VOC "
        "palette masks and 255 borders; bit12: 12-bit data in 16-bit PNGs with 0/1 masks and fov/; ct: float32 "
        "TIFFs in Hounsfield-like units with class masks; tiles: 256^2 tiles of one large nuclei scene, masks keeping "
        "the scene's instance ids, in train/ and test/; stacks: the same in 3-D (NIfTI, anisotropic voxels).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    real.add_argument("name", choices=("nuclei", "voc", "bit12", "ct", "tiles", "stacks"), help="which set")
    real.add_argument("--out", required=True, help="new folder to write")
    real.add_argument("-n", type=int, default=24, help="images to write (tiles / stacks: training ones)")
    real.add_argument("--seed", type=int, default=0, help="data seed")
    real.set_defaults(func=_realistic)
    ins = verbs.add_parser(
        "inspect",
        help="a folder's fingerprint and the plan `train` would use",
        description="Counts, sizes, dtypes, channels, intensity percentiles, the mask mode with its evidence, "
        "classes and pixel shares, objects, outliers and the normalisation; then the training plan (timed on "
        "this device unless --no-timing).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ins.add_argument("dir", help="the data set folder (images/ + masks/, or train/ val/ test/)")
    ins.add_argument("--mask-mode", default="auto", choices=("auto", "binary", "classes", "instances"))
    ins.add_argument("--ignore-index", type=int, default=None, help="mask value that is no class, e.g. 255")
    ins.add_argument("--normalize", default="auto", choices=("auto", "image", "dataset", "none"))
    ins.add_argument("--time-budget", default=None, help="the training time to plan for (default: the plan's)")
    ins.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ins.add_argument("--no-timing", action="store_true", help="skip the timed trial step (no epochs / steps)")
    ins.add_argument("--json", default=None, metavar="FILE", help="write the fingerprint and plan as JSON")
    ins.set_defaults(func=_inspect)
