"""ENet (Paszke, Chaurasia, Kim, Culurciello 2016): a real-time encoder-decoder of about 0.36 M parameters.

Initial block, bottlenecks (regular, dilated, asymmetric 5x1/1x5, downsampling with max-pool indices), PReLU in
the encoder and ReLU in the decoder, max-unpooling upsampling bottlenecks. ``forward_encoder`` gives the 1/8
resolution logits used by the paper's first training stage (encoder against labels downsampled x8).
BatchNorm with batch statistics (seed 000's single-GPU setting) is ``model.batchnorm: batch`` for any model.
Layer layout follows the paper's Table 1 and e-lab/ENet-training.
"""

from __future__ import annotations

import torch
from torch import nn


class InitialBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False)
        self.ext = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn, self.act = nn.BatchNorm2d(out_channels), nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.main(x), self.ext(x)], 1)))


class RegularBottleneck(nn.Module):
    def __init__(self, channels: int, dilation: int = 1, asymmetric: bool = False,
                 dropout: float = 0.0, relu: bool = False) -> None:
        super().__init__()
        inner = channels // 4
        act = nn.ReLU if relu else nn.PReLU
        if asymmetric:
            middle = [nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False), nn.BatchNorm2d(inner), act(),
                      nn.Conv2d(inner, inner, (1, 5), padding=(0, 2), bias=False)]
        else:
            middle = [nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, bias=False)]
        self.ext = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False), nn.BatchNorm2d(inner), act(),
            *middle, nn.BatchNorm2d(inner), act(),
            nn.Conv2d(inner, channels, 1, bias=False), nn.BatchNorm2d(channels), act(),
            nn.Dropout2d(dropout),
        )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.ext(x))


class DownsamplingBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = in_channels // 4
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 2, stride=2, bias=False), nn.BatchNorm2d(inner), nn.PReLU(),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner), nn.PReLU(),
            nn.Conv2d(inner, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.PReLU(),
            nn.Dropout2d(dropout),
        )
        self.pad = out_channels - in_channels
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.pool(x)
        ext = self.ext(x)
        main = torch.cat([main, main.new_zeros(main.shape[0], self.pad, *main.shape[2:])], 1)
        return self.act(main + ext), indices


def unpool2x(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max-unpooling by 2: each value goes back to the position its max-pool took it from (per-plane flat
    indices, PyTorch's convention), zeros elsewhere. Written as a scatter because torch's ONNX exporter has no
    MaxUnpool symbolic; this exports as ScatterElements."""
    n, c, h, w = (int(d) for d in x.shape)
    out = x.new_zeros(n, c, 4 * h * w)
    return out.scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, 2 * h, 2 * w)


class UpsamplingBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = in_channels // 4
        self.main = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(),
            nn.ConvTranspose2d(inner, inner, 2, stride=2, bias=False), nn.BatchNorm2d(inner), nn.ReLU(),
            nn.Conv2d(inner, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.Dropout2d(dropout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = unpool2x(self.main(x), indices)
        return self.act(main + self.ext(x))


def _stage() -> list[nn.Module]:
    """Stages 2 and 3 after their first layer: regular, dilated 2, asymmetric, dilated 4, regular, dilated 8,
    asymmetric, dilated 16."""
    return [RegularBottleneck(128, dropout=0.1), RegularBottleneck(128, 2, dropout=0.1),
            RegularBottleneck(128, asymmetric=True, dropout=0.1), RegularBottleneck(128, 4, dropout=0.1),
            RegularBottleneck(128, dropout=0.1), RegularBottleneck(128, 8, dropout=0.1),
            RegularBottleneck(128, asymmetric=True, dropout=0.1), RegularBottleneck(128, 16, dropout=0.1)]


class ENet(nn.Module):
    """ENet for ``classes`` outputs at the input resolution (height and width divisible by 8)."""

    def __init__(self, classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[RegularBottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, dropout=0.1)
        self.stage2 = nn.Sequential(*_stage())
        self.stage3 = nn.Sequential(*_stage())  # stage 3 repeats stage 2 without its downsampling
        self.encoder_head = nn.Conv2d(128, classes, 1)  # stage-1 training: logits at 1/8 resolution
        self.up4 = UpsamplingBottleneck(128, 64, dropout=0.1)
        self.stage4 = nn.Sequential(RegularBottleneck(64, dropout=0.1, relu=True),
                                    RegularBottleneck(64, dropout=0.1, relu=True))
        self.up5 = UpsamplingBottleneck(64, 16, dropout=0.1)
        self.stage5 = RegularBottleneck(16, dropout=0.1, relu=True)
        self.full_conv = nn.ConvTranspose2d(16, classes, 3, stride=2, padding=1, output_padding=1, bias=False)

    def _encode(self, x: torch.Tensor):
        x0 = self.initial(x)
        x1, i1 = self.down1(x0)
        x1 = self.stage1(x1)
        x2, i2 = self.down2(x1)
        return self.stage3(self.stage2(x2)), i1, i2

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-1 output: class logits at 1/8 of the input resolution."""
        return self.encoder_head(self._encode(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, i1, i2 = self._encode(x)
        x = self.stage4(self.up4(x, i2))
        x = self.stage5(self.up5(x, i1))
        return self.full_conv(x)
