"""The torch-free catalog against the registries it names: the same names everywhere, smp's encoder list as
installed, and a driver's spec check that imports no torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import segmentation_models_pytorch as smp

from models import catalog, losses, optim, registry
from models.errors import ModelError, UnknownNameError


def test_smp_encoders_are_the_installed_smps():
    assert sorted(catalog.SMP_ENCODERS) == sorted(smp.encoders.get_encoder_names())


def test_every_registry_has_the_catalogs_names_and_facts():
    # one table per concept: the catalog's names, each with exactly one builder
    assert list(registry.BUILDERS) == list(catalog.ARCHITECTURES)
    assert list(losses.BUILDERS) == list(catalog.LOSSES)
    assert list(optim.OPTIMIZER_BUILDERS) == list(catalog.OPTIMIZERS)
    assert list(optim.SCHEDULE_BUILDERS) == list(catalog.SCHEDULES)


def test_names_are_checked_with_the_closest_choice_named():
    assert catalog.check_encoder("mobilenet_v2") == "mobilenet_v2" and catalog.check_encoder(None) is None
    with pytest.raises(UnknownNameError, match="did you mean 'mobilenet_v2'"):
        catalog.check_encoder("mobilenet_v3")
    assert catalog.check_encoder("tu-resnet18") == "tu-resnet18"  # timm's names, looked up in timm
    with pytest.raises(UnknownNameError, match="timm encoder"):
        catalog.check_encoder("tu-no_such_net")
    with pytest.raises(ModelError, match="takes model.encoder resnet18 or resnet34"):
        catalog.check_arch_encoder("deeplabv3_atrous", "mobilenet_v2")
    with pytest.raises(ModelError, match="set model.encoder: null"):
        catalog.check_arch_encoder("enet", "resnet18")


def test_checking_a_spec_and_importing_the_driver_bring_no_torch(tmp_path):
    """The driver starts its workers before anything of it imports torch (``pool.actor``): a spec is loaded and
    checked, and the whole driver and study imported, with torch, smp and timm still absent."""
    code = ("import sys; from orchestrator.spec import load_spec; import orchestrator.study, orchestrator.driver.run; "
            "load_spec('sweeps/idd_lite_loss.yaml', []); "
            "print(sorted(m for m in ('torch', 'timm', 'segmentation_models_pytorch', 'lightning') if m in sys.modules))")
    env = {**os.environ, "IDD_LITE_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]", out.stderr
