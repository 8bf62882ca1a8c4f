"""Which reader a data-set folder needs: a folder of images (`data.folder`), of volumes (`data.volume_folder`) or
nnU-Net's raw layout (`data.nnunet`), told apart by `data.volume_folder.volume_layout`; training, `data inspect`
and the plan read every kind through `load_any_folder`."""

from __future__ import annotations

from pathlib import Path

from unetkit.data.types import MaskInfo, SegmentationSet

__all__ = ["load_any_folder"]


def load_any_folder(
    root: str | Path,
    *,
    mask_mode: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    ignore_index: int | None = None,
) -> tuple[dict[str, SegmentationSet], MaskInfo]:
    """The splits (`train`, `val`, `test`) of any data-set folder and how its mask values map to classes.

    Raises:
        ValueError: `ignore_index` for an nnU-Net raw data set (its dataset.json declares the labels), or the
            loaders' own refusals of `mask_mode`, `val_fraction`, `seed`.
        DataError: what the loaders refuse in the files, naming them.
    """
    from unetkit.data.folder import load_folder
    from unetkit.data.volume_folder import load_volume_folder, volume_layout

    layout = volume_layout(root)
    if layout == "nnunet":
        from unetkit.data.nnunet import load_nnunet_raw

        if ignore_index is not None:
            raise ValueError(
                f"`ignore_index` does not apply to the nnU-Net raw data set {root}: its dataset.json declares labels"
            )
        splits, info = load_nnunet_raw(root, val_fraction=val_fraction, seed=seed)
        return dict(splits), info
    if layout == "folder":
        found, info = load_volume_folder(
            root, mask_mode=mask_mode, val_fraction=val_fraction, seed=seed, ignore_index=ignore_index
        )
        return dict(found), info
    return load_folder(root, mask_mode=mask_mode, val_fraction=val_fraction, seed=seed, ignore_index=ignore_index)
