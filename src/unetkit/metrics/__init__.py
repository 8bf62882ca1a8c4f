"""Segmentation metrics, and PSNR / SSIM for image-to-image tasks."""

from unetkit.metrics.confusion import scores_from_counts, stat_scores
from unetkit.metrics.evaluate import evaluate, evaluate_dataset
from unetkit.metrics.image import psnr, ssim
from unetkit.metrics.instance import instance_counts, iou_matrix
from unetkit.metrics.pixel import PixelMeter

__all__ = [
    "PixelMeter",
    "evaluate",
    "evaluate_dataset",
    "instance_counts",
    "iou_matrix",
    "psnr",
    "scores_from_counts",
    "ssim",
    "stat_scores",
]
