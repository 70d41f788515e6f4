"""ONNX export with a parity check against PyTorch through onnxruntime.

Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript, handles PSPNet's adaptive
pooling at static shapes and ENet's max-unpooling (ONNX MaxUnpool), and exists in every torch this project runs on.
"""

from __future__ import annotations

import copy
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPBlock
from torch import nn

from models.depthwise import cudnn_depthwise
from models.errors import ModelError

INPUT, OUTPUT = "image", "logits"


def pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix whose rows average the bins of ``adaptive_avg_pool`` from n_in to n_out:
    bin i covers [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-(i + 1) * n_in // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class MatmulAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products: exact, and exportable to ONNX when the output size does
    not divide the input (PSPNet's and UPerNet's pyramid bins), where the exporter refuses the original."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = (h if o is None else o for o in self.output_size) if None in self.output_size else self.output_size
        rows, cols = pool_matrix(h, oh).to(x), pool_matrix(w, ow).to(x)
        return torch.matmul(torch.matmul(rows, x), cols.t())


def _psp_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    # smp's PSPBlock switches to F.interpolate(mode="area") under ONNX export, which fails the same way; route it
    # through its own pooling module (replaced by the matmul form) instead
    return F.interpolate(self.pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for export: every adaptive average pool that is not global becomes its matmul form, and
    depthwise convolutions that a trial routed around cuDNN are plain ``nn.Conv2d`` again."""
    model = cudnn_depthwise(copy.deepcopy(model))
    for parent in model.modules():
        if isinstance(parent, PSPBlock):
            parent.forward = types.MethodType(_psp_block_forward, parent)
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, MatmulAdaptiveAvgPool2d(child.output_size))
    return model


def export_onnx(model: nn.Module, path: str | Path, size: tuple[int, int], opset: int = 17, dynamic: bool = False,
                in_channels: int = 3) -> Path:
    """Export ``model`` in eval mode at batch 1 and ``size``; with ``dynamic`` batch, height and width are free.
    The file is checked with ``onnx.checker``."""
    import onnx  # lazy: 0.4 s of imports that every trial process would pay, and only exports need

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = exportable(model).eval()
    example = torch.zeros(1, in_channels, *size, device=next(model.parameters()).device)
    axes = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(model, (example,), str(path), opset_version=opset, dynamo=False,
                              input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True,
                              dynamic_axes=axes if dynamic else None)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; the message is what matters
            raise ModelError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{path}: exported model fails onnx.checker: {str(e).splitlines()[0]}") from e
    return path


def onnx_session(path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    import onnxruntime as ort  # lazy, as onnx in export_onnx

    if not Path(path).is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        return ort.InferenceSession(str(path), providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for corrupt files
        raise ModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None


def onnx_parity(model: nn.Module, path: str | Path, inputs: torch.Tensor) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch on ``inputs`` (fp32)."""
    model = model.eval()
    with torch.no_grad():
        expected = model(inputs.to(next(model.parameters()).device)).float().cpu().numpy()
    got = onnx_session(path).run([OUTPUT], {INPUT: inputs.cpu().numpy().astype(np.float32)})[0]
    if got.shape != expected.shape:
        raise ModelError(f"{path}: onnxruntime output {got.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())


def onnx_input_shape(path: str | Path) -> list[int | str]:
    """The model's input shape as stored: a number per fixed axis, the axis's name (``batch``, ``height``) or ``?``
    per dynamic one. The weights are not read."""
    import onnx  # lazy, as in export_onnx

    if not Path(path).is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - onnx's parse errors are untyped; a corrupt file
        raise ModelError(f"{path}: not an ONNX model ({str(e).strip().splitlines()[0][:200]})") from None
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
