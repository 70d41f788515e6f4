"""Seed 001's DeepLabV3: a ResNet-18/34 stem (conv1 ... layer2, output stride 8) followed by atrous basic blocks in
place of layer3/layer4 (dilation 2 and 4), ASPP with several rates plus image pooling, and a x8 upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation import fcn_resnet50

# blocks of the replaced layer3 / layer4 in each torchvision ResNet
DEPTHS = {"resnet18": (2, 2), "resnet34": (6, 3)}


class AtrousBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()

        def branch(kernel: int, rate: int) -> nn.Sequential:
            pad = 0 if kernel == 1 else rate
            return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=pad, dilation=rate, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU())

        self.branches = nn.ModuleList([branch(1, 1), *[branch(3, r) for r in rates]])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class AtrousDeepLabV3(nn.Module):
    def __init__(self, encoder: str = "resnet18", classes: int = 1, in_channels: int = 3,
                 rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        base = getattr(torchvision.models, encoder)(weights=None)
        if in_channels != 3:
            base.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(base.conv1, base.bn1, base.relu, base.maxpool, base.layer1, base.layer2)
        n3, n4 = DEPTHS[encoder]
        self.atrous = nn.Sequential(
            *[AtrousBasicBlock(128 if i == 0 else 256, 256, dilation=2) for i in range(n3)],
            *[AtrousBasicBlock(256 if i == 0 else 512, 512, dilation=4) for i in range(n4)],
        )
        self.aspp = ASPP(512, 256, rates)
        self.classifier = nn.Conv2d(256, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.aspp(self.atrous(self.stem(x))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FCN(nn.Module):
    """torchvision's FCN-ResNet50 (weights off by default), returning the ``out`` logits as a tensor."""

    def __init__(self, classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
        if in_channels != 3:
            self.net.backbone.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]
