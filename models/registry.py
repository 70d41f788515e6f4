"""Architecture registry over segmentation-models-pytorch: one factory, names checked with the choices listed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from models import catalog
from models.catalog import check_arch_encoder
from models.deeplab import FCN, AtrousDeepLabV3
from models.enet import ENet
from models.errors import ModelError, UnknownNameError


def _enet(encoder_name=None, encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return ENet(classes, in_channels)


def _deeplab_atrous(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return AtrousDeepLabV3(encoder_name, classes, in_channels)


def _fcn(encoder_name="resnet50", encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return FCN(classes, in_channels)


# each name of the catalog (``models.catalog.ARCHITECTURES``: descriptions, encoders) and its builder,
# ``build(encoder_name, encoder_weights, in_channels, classes)``; tests/models/test_catalog.py holds the two together
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus, "fpn": smp.FPN, "pspnet": smp.PSPNet,
    "deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus, "linknet": smp.Linknet, "manet": smp.MAnet,
    "pan": smp.PAN, "upernet": smp.UPerNet, "segformer": smp.Segformer, "enet": _enet,
    "deeplabv3_atrous": _deeplab_atrous, "fcn": _fcn,
}

WEIGHT_NAMES = ("imagenet", "ssl", "swsl", "advprop", "noisy-student")


def create_model(
    arch: str,
    encoder: str | None,
    classes: int,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    batchnorm: str = "running",
) -> nn.Module:
    """Build a model by registry name.

    ``encoder_weights`` is None (random, the offline default), a weights name smp knows (downloads at run time),
    or a local file holding an encoder ``state_dict`` (or a checkpoint with one under ``state_dict``).
    ``batchnorm="batch"`` makes every BatchNorm normalise with the current batch's statistics, in training and in
    evaluation (``track_running_stats=False``: seed 000's setting for ENet on one small GPU).
    """
    if arch not in catalog.ARCHITECTURES:
        raise UnknownNameError("architecture", arch, catalog.ARCHITECTURES)
    check_arch_encoder(arch, encoder)
    if encoder_weights and catalog.ARCHITECTURES[arch].encoders is not None:
        raise ModelError(f"{arch}: encoder_weights are for smp encoders; its own weights start random")
    local = encoder_weights if encoder_weights and encoder_weights not in WEIGHT_NAMES else None
    kwargs = {"encoder_name": encoder} if encoder else {}
    try:
        model = BUILDERS[arch](
            **kwargs, encoder_weights=None if local else encoder_weights, in_channels=in_channels, classes=classes
        )
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model {arch} with encoder {encoder} cannot be built: {first}") from e
    if local:
        load_encoder_weights(model, Path(local))
    if batchnorm == "batch":
        use_batch_statistics(model)
    return model


def use_batch_statistics(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local encoder state_dict; keys may carry an ``encoder.`` prefix (a whole-model checkpoint)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    prefixed = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    state = prefixed or state
    if not set(state) & set(model.encoder.state_dict()):
        raise ModelError(f"{path}: no tensor matches the encoder's parameters; is it this encoder's state_dict?")
    model.encoder.load_state_dict(state, strict=False)
