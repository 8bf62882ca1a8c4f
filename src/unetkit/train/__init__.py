"""Training: config, the engine (one loop for every task), tasks, checkpoints with exact resume, run reports."""

from unetkit.train.config import TrainConfig, load_config
from unetkit.train.engine import Engine, TrainingDiverged, TrainingInterrupted, TrainResult, train

__all__ = ["Engine", "TrainConfig", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "load_config", "train"]
