"""Segmentation metrics."""

from unetkit.metrics.confusion import scores_from_counts, stat_scores
from unetkit.metrics.evaluate import evaluate, evaluate_dataset
from unetkit.metrics.instance import instance_counts, iou_matrix
from unetkit.metrics.pixel import PixelMeter

__all__ = [
    "PixelMeter",
    "evaluate",
    "evaluate_dataset",
    "instance_counts",
    "iou_matrix",
    "scores_from_counts",
    "stat_scores",
]
