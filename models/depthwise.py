"""Depthwise convolutions through PyTorch's own CUDA kernels instead of cuDNN (``trainer.native_depthwise``, opt-in).

For the bf16 channels-last depthwise convolutions of MobileNetV2 (ENet has none), cuDNN 9.19 picks engines that
it compiles at run time with NVRTC, once per process: 10-17 s before a fresh trial's first training step on an
H100. PyTorch's native depthwise kernels need no compilation, but train slower (docs/benchmarks.md: 0.66x).
``native_depthwise(model)`` routes every depthwise ``nn.Conv2d`` of a model through them, forward and backward; the
other convolutions keep cuDNN. The arithmetic is the same convolution (tests compare outputs and gradients).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def is_depthwise(conv: nn.Module) -> bool:
    """A 2-d convolution with one filter group per input channel (any channel multiplier), not transposed."""
    return (type(conv) is nn.Conv2d and conv.groups > 1 and conv.groups == conv.in_channels
            and conv.out_channels % conv.in_channels == 0 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


@contextlib.contextmanager
def _cudnn_off() -> Iterator[None]:
    """cuDNN off for the ops inside, every other cuDNN setting left as it is (``cudnn.flags`` would reset them)."""
    before = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = before


class _NativeDepthwise(torch.autograd.Function):
    """conv2d with cuDNN disabled in the forward and in the backward (autograd's own backward would pick the backend
    again, outside any ``cudnn.flags`` of the forward). Autocast is applied here by hand: the compute dtype is
    chosen once and the backward uses the very tensors the forward convolved."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, dtype):
        with torch.autocast(x.device.type, enabled=False), _cudnn_off():
            xc, wc = x.to(dtype), weight.to(dtype)
            bc = bias.to(dtype) if bias is not None else None
            out = F.conv2d(xc, wc, bc, stride, padding, dilation, groups)
        ctx.save_for_backward(xc, wc)
        ctx.conf = (stride, padding, dilation, groups, bias is not None, x.dtype, weight.dtype,
                    bias.dtype if bias is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad):
        xc, wc = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias, x_dtype, w_dtype, b_dtype = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        with _cudnn_off():
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad.to(xc.dtype), xc, wc, [wc.shape[0]] if has_bias else None, list(stride), list(padding),
                list(dilation), False, [0, 0], groups, mask)
        return (gx.to(x_dtype) if mask[0] else None, gw.to(w_dtype) if mask[1] else None,
                gb.to(b_dtype) if mask[2] else None, None, None, None, None, None)


class NativeDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) whose convolution never takes cuDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        return _NativeDepthwise.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                      self.groups, dtype)


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
