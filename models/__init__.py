"""Models, losses, metrics and optimisers: plain registries and the factories that read them."""

from importlib import import_module

_HOME = {
    "ARCHITECTURES": "catalog", "LOSSES": "catalog", "OPTIMIZERS": "catalog", "SCHEDULES": "catalog",
    "loss_parts": "catalog", "list_encoders": "catalog", "list_models": "catalog", "list_losses": "catalog",
    "list_schedules": "catalog",
    "create_model": "registry",
    "create_loss": "losses", "enet_weights": "losses",
    "create_optimizer": "optim", "create_schedule": "optim",
    "ConfusionMatrix": "metrics", "metrics_from_confusion": "metrics",
    "Complexity": "complexity", "complexity": "complexity", "model_size": "complexity",
    "ModelError": "errors", "UnknownNameError": "errors",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    # lazy: `import models.errors` (reached by the CLI's error handler and `orchestrate status`) must not import torch
    if name in _HOME:
        return getattr(import_module(f"models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
