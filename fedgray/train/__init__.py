"""Local training loops."""

from fedgray.train.local import TrainResult, batches, train_steps

__all__ = ["TrainResult", "batches", "train_steps"]
