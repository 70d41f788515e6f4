"""Registry contract on CPU: every architecture builds, runs forward/backward and honours the class count."""

from __future__ import annotations

import pytest
import torch

from models.catalog import ARCHITECTURES, list_encoders
from models.complexity import model_size
from models.errors import ModelError, UnknownNameError
from models.registry import create_model

# the encoder each contract test builds an architecture with (smp ones: a small common encoder)
ENCODER = {"enet": None, "deeplabv3_atrous": "resnet18", "fcn": "resnet50", "segformer": "mit_b0"}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_exports_and_matches_onnx(arch, tmp_path):
    """Contract: forward/backward at 64x64 (PAN: 128, its pyramid pools to nothing below), class count honoured,
    ONNX export (opset 17) checked, onnxruntime within 1e-3 of PyTorch."""
    from models.export import export_onnx, onnx_parity

    torch.manual_seed(0)
    size = 128 if arch == "pan" else 64
    model = create_model(arch, ENCODER.get(arch, "mobilenet_v2"), classes=5)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 5, size, size)
    out.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    path = export_onnx(model, tmp_path / f"{arch}.onnx", (size, size))
    assert onnx_parity(model, path, torch.randn(1, 3, size, size)) <= 1e-3


def test_enet_unpooling_matches_torch():
    from models.enet import unpool2x

    x = torch.randn(2, 3, 8, 6)
    pooled, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(unpool2x(pooled, indices), torch.nn.functional.max_unpool2d(pooled, indices, 2))


def test_enet_parameter_count_matches_the_paper():
    from models.enet import ENet

    model = ENet(12)
    full_network = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.encoder_head.parameters())
    assert full_network == 350_652  # davidtvs/PyTorch-ENet reports 350.65 k for 12 classes
    assert abs(full_network - 0.36e6) / 0.36e6 < 0.05  # the paper's "about 0.36 M"
    x = torch.randn(1, 3, 64, 96)
    assert model(x).shape == (1, 12, 64, 96) and model.forward_encoder(x).shape == (1, 12, 8, 12)


def test_batch_statistics_batchnorm_and_arch_encoder_rules():
    model = create_model("enet", None, classes=3, batchnorm="batch")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.track_running_stats and m.running_mean is None for m in bns)
    model.eval()
    a, b = model(torch.randn(2, 3, 32, 32)), model(torch.randn(2, 3, 32, 32) * 3)
    assert a.shape == b.shape  # evaluation normalises with the batch's own statistics
    with pytest.raises(ModelError, match="enet has no separate encoder; set model.encoder: null"):
        create_model("enet", "mobilenet_v2", 3)
    with pytest.raises(ModelError, match="deeplabv3_atrous takes model.encoder resnet18 or resnet34"):
        create_model("deeplabv3_atrous", "mobilenet_v2", 3)
    assert create_model("deeplabv3_atrous", "resnet34", 3)(torch.randn(2, 3, 64, 64)).shape == (2, 3, 64, 64)
    assert create_model("segformer", "mit_b1", 3)(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert create_model("unet", "tu-regnetx_008", 3)(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_model_info_json(tmp_path):
    import json

    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["model-info", "enet", "--classes", "12", "--size", "64x96", "--format", "json"])
    info = json.loads(result.stdout)
    assert info["params"] == 352_200 and info["size_mb"] > 1.4 and info["counter"].startswith("torch.utils.flop_counter")
    # ENet's initial 3x3 conv alone: 13 filters x 27 MACs at 32x48 output positions
    assert info["gmacs"] > 13 * 27 * 32 * 48 / 1e9


def test_model_size_and_local_encoder_weights(tmp_path):
    model = create_model("unet", "resnet18", classes=1)
    params, size_mb = model_size(model)
    assert params == sum(p.numel() for p in model.parameters())
    assert size_mb == pytest.approx(sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
                                    / 1e6 + sum(t.numel() * t.element_size() for t in model.state_dict().values()
                                                if not t.is_floating_point()) / 1e6)
    path = tmp_path / "enc.pt"
    torch.save({f"encoder.{k}": torch.full_like(v, 0.5) if v.is_floating_point() else v
                for k, v in model.encoder.state_dict().items()}, path)
    loaded = create_model("unet", "resnet18", classes=1, encoder_weights=str(path))
    assert torch.all(loaded.encoder.conv1.weight == 0.5)
    torch.save({"nothing": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="no tensor matches the encoder"):
        create_model("unet", "resnet18", classes=1, encoder_weights=str(tmp_path / "bad.pt"))


def test_names_are_checked():
    assert "mobilenet_v2" in list_encoders() and "resnet18" in list_encoders()
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        create_model("unett", "resnet18", 2)
    with pytest.raises(UnknownNameError, match="unknown encoder 'resnet181'"):
        create_model("unet", "resnet181", 2)
    assert create_model("unet", "tu-resnet10t", 2)(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_matmul_adaptive_pool_is_exact():
    from models.export import MatmulAdaptiveAvgPool2d, pool_matrix

    expected = torch.tensor([[0.5, 0.5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 0.5, 0.5]])
    assert torch.allclose(pool_matrix(5, 3), expected)
    x = torch.randn(2, 4, 10, 7)
    for size in (1, 2, 3, 6, (3, 5)):
        expected = torch.nn.AdaptiveAvgPool2d(size)(x)
        assert torch.allclose(MatmulAdaptiveAvgPool2d(size)(x), expected, atol=1e-6)


@pytest.mark.parametrize("multiplier, stride, dilation, bias", [(1, 1, 1, False), (2, 2, 1, True), (1, 1, 2, True)])
@pytest.mark.parametrize("autocast", [False, True])
def test_native_depthwise_computes_the_same_convolution(multiplier, stride, dilation, bias, autocast):
    """The cuDNN-free depthwise path gives the output and every gradient of nn.Conv2d, in fp32 and under bf16
    autocast, on a channels-last input, and keeps its layout; only depthwise convolutions are switched, parameters
    stay the same objects, and no process-wide cuDNN setting changes (the pool's trials share the process)."""
    import copy

    from models.depthwise import NativeDepthwiseConv2d, native_depthwise

    torch.manual_seed(0)
    ref = torch.nn.Conv2d(8, 8 * multiplier, 3, stride, dilation, dilation=dilation, groups=8, bias=bias)
    model = torch.nn.Sequential(copy.deepcopy(ref), torch.nn.Conv2d(8 * multiplier, 4, 1))
    weight = model[0].weight
    assert native_depthwise(model) == 1 and type(model[0]) is NativeDepthwiseConv2d
    assert type(model[1]) is torch.nn.Conv2d and model[0].weight is weight
    x = torch.randn(2, 8, 9, 11).to(memory_format=torch.channels_last).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        a, b = ref(x), model[0](x2)
    assert a.dtype == b.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert b.is_contiguous(memory_format=torch.channels_last) and torch.backends.cudnn.enabled
    # NCHW against the reference's channels-last kernels: the same sums in another order
    close = {"rtol": 1e-2, "atol": 1e-2} if autocast else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(b, a, **close)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    assert x2.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x2.grad, x.grad, **close)
    torch.testing.assert_close(model[0].weight.grad, ref.weight.grad, **close)
    assert model[0].weight.grad.dtype == torch.float32
    if bias:
        torch.testing.assert_close(model[0].bias.grad, ref.bias.grad, **close)
    nchw = model[0](x.detach().contiguous())
    assert nchw.is_contiguous() and torch.allclose(nchw, model[0](x.detach()), atol=1e-5)


def test_native_depthwise_on_real_encoders_and_back_for_export(tmp_path):
    """MobileNetV2's 17 depthwise convolutions are switched (ENet has none); the state dict is unchanged, and the
    exported copy has plain convolutions again (the ONNX graph matches the untouched model)."""
    from models.depthwise import NativeDepthwiseConv2d, cudnn_depthwise, native_depthwise
    from models.export import export_onnx, exportable, onnx_parity

    model = create_model("unet", "mobilenet_v2", classes=3).eval()
    keys = list(model.state_dict())
    assert native_depthwise(model) == 17 and list(model.state_dict()) == keys
    assert native_depthwise(create_model("enet", None, classes=3)) == 0
    assert not any(isinstance(m, NativeDepthwiseConv2d) for m in exportable(model).modules())
    assert any(isinstance(m, NativeDepthwiseConv2d) for m in model.modules())  # exportable() copies
    assert onnx_parity(model, export_onnx(model, tmp_path / "m.onnx", (64, 64)), torch.randn(1, 3, 64, 64)) < 1e-3
    assert not any(isinstance(m, NativeDepthwiseConv2d) for m in cudnn_depthwise(model).modules())


@pytest.mark.gpu
def test_native_depthwise_takes_atens_own_kernels_on_a_gpu():
    """On a GPU, ATen's kernel choice for what NativeDepthwiseConv2d hands to conv2d is its own depthwise kernels, in
    bf16 and fp32, where the channels-last tensors the model trains with take cuDNN; two threads train through it
    at once, as the slots of a pool worker do."""
    from concurrent.futures import ThreadPoolExecutor

    from models.depthwise import native_depthwise

    def backend(x: torch.Tensor, w: torch.Tensor):
        return torch._C._select_conv_backend(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], x.shape[1], None)

    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, 16, 20, device="cuda").to(memory_format=torch.channels_last)
    for dtype in (torch.bfloat16, torch.float32):
        xd, wd = x.to(dtype), conv.weight.to(dtype)
        assert backend(xd, wd) == torch._C._ConvBackend.Cudnn
        nchw = backend(xd.contiguous(), wd.clone(memory_format=torch.contiguous_format))
        assert nchw == torch._C._ConvBackend.CudaDepthwise2d

    def train(seed: int) -> float:
        torch.manual_seed(seed)
        model = create_model("unet", "mobilenet_v2", classes=2).cuda().to(memory_format=torch.channels_last)
        native_depthwise(model)
        images = torch.randn(2, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
        with torch.cuda.stream(torch.cuda.Stream()):
            for _ in range(3):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(images).float().mean()
                loss.backward()
            torch.cuda.current_stream().synchronize()
        return loss.item()

    with ThreadPoolExecutor(2) as pool:
        losses = list(pool.map(train, (0, 1)))
    assert all(torch.isfinite(torch.tensor(losses))) and torch.backends.cudnn.enabled
