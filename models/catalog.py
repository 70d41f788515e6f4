"""What the registries answer to, without torch: the architectures, smp's encoders, the losses, optimisers and
schedules by name, with their descriptions, and the checks a spec's names go through. A sweep's spec is checked, and
its Ray workers started, before the driver imports torch (4-5 s of a driver's start on 2 cores, ~3x that on the GPU
host); the registries (``registry``, ``losses``, ``optim``) build their entries from these names, and a test holds
``SMP_ENCODERS`` to the installed smp's list.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import ModelError, UnknownNameError


@dataclass(frozen=True)
class ArchitectureInfo:
    """``encoders`` None: any smp/timm encoder, else the only ones it takes (an empty tuple: it has none of its own,
    ``model.encoder: null``)."""

    description: str
    encoders: tuple[str, ...] | None = None


ARCHITECTURES: dict[str, ArchitectureInfo] = {
    "unet": ArchitectureInfo("U-Net: encoder-decoder with skip connections (Ronneberger 2015)"),
    "unetplusplus": ArchitectureInfo("U-Net++: nested dense skip pathways"),
    "fpn": ArchitectureInfo("Feature Pyramid Network decoder (Lin 2017)"),
    "pspnet": ArchitectureInfo("PSPNet: pyramid pooling for global context (Zhao 2017)"),
    "deeplabv3": ArchitectureInfo("DeepLabV3: atrous convolutions + ASPP (Chen 2017)"),
    "deeplabv3plus": ArchitectureInfo("DeepLabV3+: ASPP + light decoder (Chen 2018)"),
    "linknet": ArchitectureInfo("LinkNet: residual skip links, real-time (Chaurasia 2017)"),
    "manet": ArchitectureInfo("MA-Net: multi-scale attention decoder"),
    "pan": ArchitectureInfo("Pyramid Attention Network"),
    "upernet": ArchitectureInfo("UPerNet: unified perceptual parsing decoder"),
    "segformer": ArchitectureInfo("SegFormer all-MLP decoder (use with mit_b0..mit_b5 encoders)"),
    "enet": ArchitectureInfo("ENet (Paszke 2016), 0.35 M params; two-stage training with model.stage1_epochs", ()),
    "deeplabv3_atrous": ArchitectureInfo("seed 001's DeepLabV3: ResNet-18/34 stem, atrous blocks, OS 8",
                                         ("resnet18", "resnet34")),
    "fcn": ArchitectureInfo("FCN with torchvision's ResNet-50 backbone", ("resnet50",)),
}

# segmentation-models-pytorch 0.6's encoders (``smp.encoders.get_encoder_names()``; tests/models/test_catalog.py)
SMP_ENCODERS: tuple[str, ...] = (
    "densenet121", "densenet161", "densenet169", "densenet201", "dpn107", "dpn131", "dpn68", "dpn68b", "dpn92",
    "dpn98", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "efficientnet-b4",
    "efficientnet-b5", "efficientnet-b6", "efficientnet-b7", "inceptionresnetv2", "inceptionv4", "mit_b0", "mit_b1",
    "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mobilenet_v2", "mobileone_s0", "mobileone_s1", "mobileone_s2",
    "mobileone_s3", "mobileone_s4", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x16d",
    "resnext101_32x32d", "resnext101_32x48d", "resnext101_32x4d", "resnext101_32x8d", "resnext50_32x4d",
    "se_resnet101", "se_resnet152", "se_resnet50", "se_resnext101_32x4d", "se_resnext50_32x4d", "senet154",
    "timm-efficientnet-b0", "timm-efficientnet-b1", "timm-efficientnet-b2", "timm-efficientnet-b3",
    "timm-efficientnet-b4", "timm-efficientnet-b5", "timm-efficientnet-b6", "timm-efficientnet-b7",
    "timm-efficientnet-b8", "timm-efficientnet-l2", "timm-skresnet18", "timm-skresnet34", "timm-skresnext50_32x4d",
    "timm-tf_efficientnet_lite0", "timm-tf_efficientnet_lite1", "timm-tf_efficientnet_lite2",
    "timm-tf_efficientnet_lite3", "timm-tf_efficientnet_lite4", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
    "vgg16_bn", "vgg19", "vgg19_bn", "xception",
)


@dataclass(frozen=True)
class LossInfo:
    description: str
    graph_safe: bool = True  # static shapes, no host reads: can be captured in a CUDA graph


LOSSES: dict[str, LossInfo] = {
    "ce": LossInfo("cross-entropy (binary: BCE on logits), ignore index honoured"),
    "weighted_ce_enet": LossInfo("cross-entropy weighted by ENet weights 1/ln(c+p) of the train split"),
    "dice": LossInfo("soft Dice loss (smp)"),
    "bce_dice": LossInfo("soft BCE (multiclass: CE) + Dice, seed 000's winner"),
    # smp selects the non-ignored pixels by boolean indexing (a data-dependent shape)
    "focal": LossInfo("focal loss (smp; multiclass is one-vs-rest sigmoid), gamma default 2", graph_safe=False),
    "tversky": LossInfo("(focal) Tversky loss (smp): alpha weighs false positives, beta false negatives"),
    "lovasz": LossInfo("Lovasz hinge/softmax (smp)", graph_safe=False),  # boolean indexing, as focal
}

OPTIMIZERS: dict[str, str] = {
    "adam": "Adam (L2 weight decay)",
    "adamw": "AdamW (decoupled weight decay)",
    "sgd": "SGD with Nesterov momentum",
}

SCHEDULES: dict[str, str] = {
    "constant": "constant learning rate",
    "cosine": "cosine decay to lr * min_lr_factor over the run",
    "poly": "polynomial decay (1 - t/T)^power, DeepLab's 'poly'",
    "step": "lr * step_gamma every step_epochs epochs (ENet: x0.1 every 100)",
    "cosine_warm_restarts": "SGDR: cosine restarts every restart_epochs (x restart_mult)",
    "onecycle": "one-cycle: ascent for pct_start of the run to lr, cosine anneal (seed 002: 3e-4, 30%)",
}

def list_models() -> dict[str, str]:
    """Registry name -> one-line description."""
    return {name: info.description for name, info in ARCHITECTURES.items()}


def list_encoders() -> list[str]:
    """smp's encoder names; any timm model also works as ``tu-<name>``."""
    return sorted(SMP_ENCODERS)


def list_losses() -> dict[str, str]:
    return {name: info.description for name, info in LOSSES.items()}


def list_schedules() -> dict[str, str]:
    return dict(SCHEDULES)


# how ``models.complexity`` counts GMACs, as the reports name it
COUNTER = "torch.utils.flop_counter (conv + matmul multiply-adds; interpolation, pooling, elementwise not counted)"


def loss_parts(name: str) -> tuple[str, ...]:
    """The one parse of ``loss.name``: ``"a"`` or ``"a+b"`` (spaces around ``+`` allowed) -> ``("a", "b")``.
    Raises UnknownNameError for a part not in LOSSES and ModelError for more than two parts."""
    parts = tuple(p.strip() for p in name.split("+"))
    for part in parts:
        if part not in LOSSES:
            raise UnknownNameError("loss", part, LOSSES)
    if len(parts) > 2:
        raise ModelError(f"'{name}' combines more than two losses; write 'a+b' with loss.weights: [wa, wb]")
    return parts


def check_encoder(name: str | None) -> str | None:
    """Return ``name`` if smp or timm (``tu-*``) knows it, else raise UnknownNameError. Only a ``tu-`` name imports
    timm (and so torch) to look it up."""
    if name is None or name in SMP_ENCODERS:
        return name
    if name.startswith("tu-"):
        import timm  # lazy: timm imports torch; smp's own names need neither

        if timm.is_model(name[3:]):  # one model by its exact name (list_models would read it as a pattern: tu-*)
            return name
        raise UnknownNameError("timm encoder", name, [f"tu-{m}" for m in timm.list_models()])
    raise UnknownNameError("encoder", name, SMP_ENCODERS)


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
