"""Models, losses, metrics and optimisers: plain registries and the factories that read them."""

from models.complexity import Complexity, complexity, model_size
from models.losses import LOSSES, create_loss, enet_weights, list_losses
from models.metrics import ConfusionMatrix, metrics_from_confusion
from models.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_schedule, list_schedules
from models.registry import ARCHITECTURES, create_model, list_encoders, list_models

__all__ = [
    "ARCHITECTURES",
    "Complexity",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfusionMatrix",
    "complexity",
    "create_loss",
    "create_model",
    "create_optimizer",
    "create_schedule",
    "enet_weights",
    "list_encoders",
    "list_losses",
    "list_models",
    "list_schedules",
    "metrics_from_confusion",
    "model_size",
]
