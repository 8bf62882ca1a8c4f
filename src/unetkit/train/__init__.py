"""Training: config, the loop, checkpoints with exact resume, and run reports."""

from unetkit.train.config import TrainConfig, load_config
from unetkit.train.loop import TrainingDiverged, TrainingInterrupted, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "load_config", "train"]
