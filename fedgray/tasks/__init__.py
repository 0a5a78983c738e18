"""Tasks: objectives and metrics for image-text retrieval and classification."""

from fedgray.tasks.data import TaskData, prepare
from fedgray.tasks.metrics import evaluate, recall_at_k
from fedgray.tasks.objectives import TASKS, Task

__all__ = ["TASKS", "Task", "TaskData", "evaluate", "prepare", "recall_at_k"]
