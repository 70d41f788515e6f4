"""Architecture registry over segmentation-models-pytorch: one factory, names checked with the choices listed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from orchestrator.errors import SegsweepError, UnknownNameError


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]
    description: str


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
    "segformer": Architecture(smp.Segformer, "SegFormer all-MLP decoder (use with mit_b* encoders)"),
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
        import timm

        if timm.list_models(name[3:]):
            return name
        raise UnknownNameError("timm encoder", name, [f"tu-{m}" for m in timm.list_models()])
    raise UnknownNameError("encoder", name, list_encoders())


def create_model(
    arch: str,
    encoder: str | None,
    classes: int,
    encoder_weights: str | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """Build a model by registry name.

    ``encoder_weights`` is None (random, the offline default), a weights name smp knows (downloads at run time),
    or a local file holding an encoder ``state_dict`` (or a checkpoint with one under ``state_dict``).
    """
    if arch not in ARCHITECTURES:
        raise UnknownNameError("architecture", arch, ARCHITECTURES)
    check_encoder(encoder)
    local = encoder_weights if encoder_weights and encoder_weights not in WEIGHT_NAMES else None
    kwargs = {"encoder_name": encoder} if encoder else {}
    try:
        model = ARCHITECTURES[arch].build(
            **kwargs, encoder_weights=None if local else encoder_weights, in_channels=in_channels, classes=classes
        )
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SegsweepError(f"model {arch} with encoder {encoder} cannot be built: {first}") from e
    if local:
        load_encoder_weights(model, Path(local))
    return model


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local encoder state_dict; keys may carry an ``encoder.`` prefix (a whole-model checkpoint)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    prefixed = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    state = prefixed or state
    if not set(state) & set(model.encoder.state_dict()):
        raise SegsweepError(f"{path}: no tensor matches the encoder's parameters; is it this encoder's state_dict?")
    model.encoder.load_state_dict(state, strict=False)


def model_size(model: nn.Module) -> tuple[int, float]:
    """(parameter count, weight size in MB of the fp32 state_dict: parameters + buffers)."""
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return params, nbytes / 1e6
