"""Prediction on images of any size: tile planning, batched tiles, blending and stitching
(`tiling`), predictions on arrays (`predictor`) and on files (`files`: region readers in `readers`, band
writers in `writers`, instance labels block by block in `instances_tiled`); the engine over any number of axes
(`grid`) and volumes with a 3D model (`volume`: arrays, `volume_files`: NIfTI / NRRD / TIFF stacks, in slabs)."""

from unetkit.infer.files import predict_file
from unetkit.infer.predictor import DEFAULT_OVERLAP, DEFAULT_TILE, Predictor, predict, predict_labels
from unetkit.infer.tiling import BLEND_MODES, TilePlan, plan_starts, plan_tiles, run_tiled
from unetkit.infer.volume import predict_volume
from unetkit.infer.volume_files import predict_volume_file

__all__ = [
    "BLEND_MODES",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "Predictor",
    "TilePlan",
    "plan_starts",
    "plan_tiles",
    "predict",
    "predict_file",
    "predict_labels",
    "predict_volume",
    "predict_volume_file",
    "run_tiled",
]
