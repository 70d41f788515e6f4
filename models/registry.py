"""Architecture registry over segmentation-models-pytorch: one factory, names checked with the choices listed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from models.deeplab import FCN, AtrousDeepLabV3
from models.enet import ENet
from models.errors import ModelError, UnknownNameError


@dataclass(frozen=True)
class Architecture:
    """``build(encoder_name, encoder_weights, in_channels, classes)``; ``encoders`` None: any smp/timm encoder,
    else the only ones it takes (an empty tuple: it has none of its own, ``model.encoder: null``)."""

    build: Callable[..., nn.Module]
    description: str
    encoders: tuple[str, ...] | None = None


def _enet(encoder_name=None, encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return ENet(classes, in_channels)


def _deeplab_atrous(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return AtrousDeepLabV3(encoder_name, classes, in_channels)


def _fcn(encoder_name="resnet50", encoder_weights=None, in_channels=3, classes=1) -> nn.Module:
    return FCN(classes, in_channels)


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(smp.Unet, "U-Net: encoder-decoder with skip connections (Ronneberger 2015)"),
    "unetplusplus": Architecture(smp.UnetPlusPlus, "U-Net++: nested dense skip pathways"),
    "fpn": Architecture(smp.FPN, "Feature Pyramid Network decoder (Lin 2017)"),
    "pspnet": Architecture(smp.PSPNet, "PSPNet: pyramid pooling for global context (Zhao 2017)"),
    "deeplabv3": Architecture(smp.DeepLabV3, "DeepLabV3: atrous convolutions + ASPP (Chen 2017)"),
    "deeplabv3plus": Architecture(smp.DeepLabV3Plus, "DeepLabV3+: ASPP + light decoder (Chen 2018)"),
    "linknet": Architecture(smp.Linknet, "LinkNet: residual skip links, real-time (Chaurasia 2017)"),
    "manet": Architecture(smp.MAnet, "MA-Net: multi-scale attention decoder"),
    "pan": Architecture(smp.PAN, "Pyramid Attention Network"),
    "upernet": Architecture(smp.UPerNet, "UPerNet: unified perceptual parsing decoder"),
    "segformer": Architecture(smp.Segformer, "SegFormer all-MLP decoder (use with mit_b0..mit_b5 encoders)"),
    "enet": Architecture(_enet, "ENet (Paszke 2016), 0.35 M params; two-stage training with model.stage1_epochs", ()),
    "deeplabv3_atrous": Architecture(_deeplab_atrous, "seed 001's DeepLabV3: ResNet-18/34 stem, atrous blocks, OS 8",
                                     ("resnet18", "resnet34")),
    "fcn": Architecture(_fcn, "FCN with torchvision's ResNet-50 backbone", ("resnet50",)),
}

WEIGHT_NAMES = ("imagenet", "ssl", "swsl", "advprop", "noisy-student")


def list_models() -> dict[str, str]:
    """Registry name -> one-line description."""
    return {name: arch.description for name, arch in ARCHITECTURES.items()}


@cache
def list_encoders() -> list[str]:
    """smp's encoder names; any timm model also works as ``tu-<name>``."""
    return sorted(smp.encoders.get_encoder_names())


def check_encoder(name: str | None) -> str | None:
    """Return ``name`` if smp or timm (``tu-*``) knows it, else raise UnknownNameError."""
    if name is None or name in list_encoders():
        return name
    if name.startswith("tu-"):
        if timm.list_models(name[3:]):
            return name
        raise UnknownNameError("timm encoder", name, [f"tu-{m}" for m in timm.list_models()])
    raise UnknownNameError("encoder", name, list_encoders())


def check_arch_encoder(arch: str, encoder: str | None) -> None:
    """Raise ModelError when ``arch`` does not take ``encoder`` (custom architectures have fixed ones)."""
    allowed = ARCHITECTURES[arch].encoders
    if allowed is None:
        if encoder is None:
            raise ModelError(f"{arch} needs an encoder (e.g. model.encoder: mobilenet_v2)")
        check_encoder(encoder)
    elif allowed == () and encoder is not None:
        raise ModelError(f"{arch} has no separate encoder; set model.encoder: null")
    elif allowed and encoder not in allowed:
        raise ModelError(f"{arch} takes model.encoder {' or '.join(allowed)}, not {encoder}")


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
    if arch not in ARCHITECTURES:
        raise UnknownNameError("architecture", arch, ARCHITECTURES)
    check_arch_encoder(arch, encoder)
    if encoder_weights and ARCHITECTURES[arch].encoders is not None:
        raise ModelError(f"{arch}: encoder_weights are for smp encoders; its own weights start random")
    local = encoder_weights if encoder_weights and encoder_weights not in WEIGHT_NAMES else None
    kwargs = {"encoder_name": encoder} if encoder else {}
    try:
        model = ARCHITECTURES[arch].build(
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
