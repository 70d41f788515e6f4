"""Registry contract on CPU: every architecture builds, runs forward/backward and honours the class count."""

from __future__ import annotations

import pytest
import torch

from models.registry import ARCHITECTURES, create_model, list_encoders, model_size
from orchestrator.errors import SegsweepError, UnknownNameError


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_a_step(arch):
    torch.manual_seed(0)
    size = 128 if arch == "pan" else 64  # PAN's pyramid pools down to nothing below 128
    model = create_model(arch, "mobilenet_v2", classes=3)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 3, size, size)
    out.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


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
    with pytest.raises(SegsweepError, match="no tensor matches the encoder"):
        create_model("unet", "resnet18", classes=1, encoder_weights=str(tmp_path / "bad.pt"))


def test_names_are_checked():
    assert "mobilenet_v2" in list_encoders() and "resnet18" in list_encoders()
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        create_model("unett", "resnet18", 2)
    with pytest.raises(UnknownNameError, match="unknown encoder 'resnet181'"):
        create_model("unet", "resnet181", 2)
    assert create_model("unet", "tu-resnet10t", 2)(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
