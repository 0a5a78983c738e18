"""How a site trains, in ``fedgray adapt`` and in federations alike: the one local trainer
(:mod:`.trainer`), its schedule (:mod:`.schedule`), the trainer kinds registry
(:mod:`.kinds`) and the gradient kind (:mod:`.gradient`)."""

from fedgray.train.local import TrainResult, batches, train_steps

__all__ = ["TrainResult", "batches", "train_steps"]
