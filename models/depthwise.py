"""Depthwise convolutions through PyTorch's own CUDA kernels instead of cuDNN (``trainer.native_depthwise``, opt-in).

For the bf16 channels-last depthwise convolutions of MobileNetV2 (ENet has none), cuDNN 9.19 picks engines that
it compiles at run time with NVRTC, once per process: 10-17 s before a fresh trial's first training step on an
H100. PyTorch's native depthwise kernels need no compilation, but train slower (docs/benchmarks.md: 0.66x for one
trial on an H100, 0.77x for the packed study on an H200).
``native_depthwise(model)`` routes every depthwise ``nn.Conv2d`` of a model through them, forward and backward (by
layout, not by a process-wide switch: ``NativeDepthwiseConv2d``); the other convolutions keep cuDNN. The arithmetic
is the same convolution (tests compare outputs and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_depthwise(conv: nn.Module) -> bool:
    """A 2-d convolution with one filter group per input channel (any channel multiplier), not transposed."""
    return (type(conv) is nn.Conv2d and conv.groups > 1 and conv.groups == conv.in_channels
            and conv.out_channels % conv.in_channels == 0 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


class NativeDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) whose convolution PyTorch runs with its own CUDA depthwise
    kernels, not cuDNN's.

    ATen's choice of kernel (``use_cudnn_depthwise``) takes cuDNN for every channels-last depthwise convolution, and
    its own kernels for an NCHW one unless it is fp16 (NCHW fp16 may still take cuDNN for some shapes). So the input
    and the weight go in as NCHW (a channels-last weight of one channel per group suggests channels-last too, hence
    the clone), the output goes back to the input's layout, and autograd's backward picks the same kernels. Nothing
    process-wide is switched (``torch.backends.cudnn.enabled``, say): the trials of a pool worker run in threads side
    by side, and a switch of one thread would reach every other's convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x.contiguous(), self.weight.clone(memory_format=torch.contiguous_format), self.bias, self.stride,
                     self.padding, self.dilation, self.groups)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def native_depthwise(model: nn.Module) -> int:
    """Switch every depthwise ``nn.Conv2d`` of ``model`` to ``NativeDepthwiseConv2d`` in place (the class only: the
    parameters stay the same objects). Returns how many were switched."""
    count = 0
    for module in model.modules():
        if is_depthwise(module):
            module.__class__ = NativeDepthwiseConv2d
            count += 1
    return count


def cudnn_depthwise(model: nn.Module) -> nn.Module:
    """The reverse, in place: every ``NativeDepthwiseConv2d`` becomes a plain ``nn.Conv2d`` again (for export and
    for latency, which measure the model as it is deployed). Returns ``model``."""
    for module in model.modules():
        if type(module) is NativeDepthwiseConv2d:
            module.__class__ = nn.Conv2d
    return model
