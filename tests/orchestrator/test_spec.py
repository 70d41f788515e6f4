"""Sweep-file validation: every bad input is one line naming the file, the key path and what is allowed."""

from __future__ import annotations

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec.keys import Domain, expand_env, flatten, parse_domain, unflatten
from orchestrator.spec.load import build_sweep, load_spec, load_spec_text
from tests.conftest import ROOT, tiny_spec


def error_of(write_spec, spec, overrides=()) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(spec), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_spec_with_domains(write_spec, tmp_path):
    spec = tiny_spec(tmp_path, loss={"name": {"choice": ["dice", "focal", "bce_dice+lovasz"]}})
    spec["optimizer"]["lr"] = {"loguniform": [1e-4, 1e-2]}
    spec["trainer"]["batch_size"] = {"int": [2, 4]}
    sweep = load_spec(write_spec(spec))
    assert sweep.domains == {
        "loss.name": Domain("choice", ("dice", "focal", "bce_dice+lovasz")),
        "optimizer.lr": Domain("loguniform", (1e-4, 1e-2)),
        "trainer.batch_size": Domain("int", (2, 4)),
    }
    assert sweep.spec.loss.name == "dice"  # fixed view holds a domain's first value
    flat = sweep.trial_flat()
    assert flat["optimizer.lr"] == Domain("loguniform", (1e-4, 1e-2)) and flat["model.arch"] == "unet"
    assert "search.metric" not in flat  # only trial sections travel with trials


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["loss"].update(name="dise"), "loss.name: unknown loss 'dise' (did you mean 'dice'?"),
        (lambda s: s["model"].update(arch="unett"), "model.arch: unknown architecture 'unett' (did you mean 'unet'?"),
        (lambda s: s["model"].update(encoder="resnet181"), "model.encoder: unknown encoder 'resnet181'"),
        (lambda s: s["data"].update(dataset="idd"), "data.dataset: unknown dataset 'idd'"),
        (lambda s: s["model"].update(archh="unet"), "model.archh: unknown key 'archh' (did you mean 'arch'?"),
        (lambda s: s.update(optimiser={"lr": 1}), "optimiser: unknown key 'optimiser' (did you mean 'optimizer'?"),
        (lambda s: s["trainer"].update(max_epochs="ten"), "trainer.max_epochs: Input should be a valid integer"),
        (lambda s: s["data"].update(size=[100, 320]), "data.size: [100, 320] must be two positive multiples of 32"),
        (lambda s: s.setdefault("resources", {}).update(mps="maybe"),
         "resources.mps: Input should be a valid boolean or 'auto', got 'maybe'"),
        (lambda s: s.setdefault("resources", {}).update(trials_per_gpu=0), "resources.trials_per_gpu: 0: must be >= 1"),
        (lambda s: s["search"].update(algorithm="hyperopt"), "search.algorithm: Input should be 'optuna', 'random' or"),
        (lambda s: s["search"].update(metric="val/iou/road"), "search.metric: unknown metric 'val/iou/road'"),
        (lambda s: s["optimizer"].update(lr={"uniform": [0.1, 0.01]}), "optimizer.lr: uniform bounds must satisfy lo < hi"),
        (lambda s: s["optimizer"].update(lr={"loguniform": [0, 0.01]}), "optimizer.lr: loguniform bounds must be > 0"),
        (lambda s: s["trainer"].update(batch_size={"int": [2.5, 4]}), "trainer.batch_size: int needs two integers"),
        (lambda s: s["loss"].update(name={"choice": ["dice", "tverskyy"]}), "loss.name: unknown loss 'tverskyy'"),
        (lambda s: s["data"].update(size={"choice": [[32, 64]]}), "data.size: search domains are allowed only under"),
        (lambda s: s["optimizer"].update(lr={"choice": [0.1], "uniform": [0, 1]}), "exactly one of choice"),
        (lambda s: s["data"].pop("root"), "data.root: required key is missing"),
        (lambda s: s["data"].update(dataset="idd_lite", root="/no/such/dir"), "data.root: /no/such/dir does not exist"),
        (lambda s: s["data"].update(val_split="../../etc"), "data.val_split: '../../etc': a split is a folder name"),
        (lambda s: s.update(evaluate={"split": "a/b"}), "evaluate.split: 'a/b': a split is a folder name"),
        (lambda s: s.update(export={"targets": ["ssh://x@127.0.0.1:9"], "ssh_options": ["ProxyCommand=touch /tmp/x"]}),
         "export.ssh_options: ssh option ProxyCommand: refused (it runs a command on this machine)"),
        (lambda s: s["search"].update(latency_proxy={"backend": "ort-cpu", "ssh_options": ["LocalCommand=id"]}),
         "search.latency_proxy.ssh_options: ssh option LocalCommand: refused"),
        (lambda s: s.update(export={"targets": ["jetsn1"]}),
         "export.targets: unknown target 'jetsn1' (registered: none"),
        (lambda s: s.update(export={"targets": ["ssh://-oProxyCommand=x"]}),
         "export.targets: ssh://-oProxyCommand=x: a user or host name is letters"),
    ],
)
def test_bad_specs_name_key_and_choices(write_spec, tmp_path, monkeypatch, mutate, expected):
    monkeypatch.setenv("SEGSWEEP_TARGETS", str(tmp_path / "targets.json"))  # no registered target
    spec = tiny_spec(tmp_path)
    mutate(spec)
    message = error_of(write_spec, spec)
    assert message.startswith(str(tmp_path / "sweep.yaml") + ": ")
    assert expected in message


def test_yaml_syntax_error_names_line(write_spec):
    message = error_of(write_spec, "name: x\ndata: [unclosed\n")
    assert "sweep.yaml" in message and "line" in message and "YAML syntax error" in message


def test_grid_rejects_continuous_domains(write_spec, tmp_path):
    spec = tiny_spec(tmp_path, search={"algorithm": "grid"})
    spec["optimizer"]["lr"] = {"uniform": [0.001, 0.01]}
    assert "grid search needs {choice: [...]} domains" in error_of(write_spec, spec)


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("ROOT_X", "/data/idd")
    monkeypatch.delenv("UNSET_X", raising=False)
    assert expand_env({"a": "${ROOT_X}/lite", "b": "${UNSET_X:-5}", "c": ["${ROOT_X}"]}) == {
        "a": "/data/idd/lite", "b": 5, "c": ["/data/idd"]}
    with pytest.raises(SpecError, match="environment variable UNSET_X is not set"):
        expand_env({"a": "${UNSET_X}"}, "data.root")


def test_set_applies_before_env_expansion(write_spec, tmp_path, monkeypatch):
    """README's service example: --set replaces a ``${VAR}`` whose variable is not set, on the CLI too; a variable is
    read from the mapping given (the service passes the client's), never from this process's then."""
    monkeypatch.delenv("ROOT_UNSET_X", raising=False)
    monkeypatch.setenv("SECRET_X", "s3cret")
    spec = tiny_spec(tmp_path)
    spec["data"]["root"] = "${ROOT_UNSET_X}"
    path = write_spec(spec)
    assert "environment variable ROOT_UNSET_X is not set" in error_of(write_spec, spec)
    assert load_spec(path, [f"data.root={tmp_path / 'd'}"]).spec.data.root == str(tmp_path / "d")
    spec["name"] = "x-${SECRET_X}"
    text = write_spec(spec).read_text()
    assert load_spec_text(text, [f"data.root={tmp_path}"]).spec.name == "x-s3cret"  # the CLI: its own environment
    with pytest.raises(SpecError, match="environment variable SECRET_X is not set") as refused:
        load_spec_text(text, [f"data.root={tmp_path}"], environ={})
    assert "s3cret" not in str(refused.value)
    assert load_spec_text(text, [f"data.root={tmp_path}"], environ={"SECRET_X": "given"}).spec.name == "x-given"


def test_set_overrides_leaf_subtree_and_domain(write_spec, tmp_path):
    path = write_spec(tiny_spec(tmp_path))
    sweep = load_spec(path, ["optimizer.lr=3e-4", "model={arch: fpn, encoder: resnet18}",
                             "loss.name={choice: [dice, focal]}"])
    assert sweep.spec.optimizer.lr == 3e-4 and sweep.spec.model.arch == "fpn"
    assert sweep.domains["loss.name"] == Domain("choice", ("dice", "focal"))
    with pytest.raises(SpecError, match=r"\(with --set\): model.arhc: unknown key 'arhc'"):
        load_spec(path, ["model.arhc=fpn"])
    with pytest.raises(SpecError, match="expected key=value"):
        load_spec(path, ["optimizer.lr"])


def test_flatten_roundtrip_and_resolved_yaml(write_spec, tmp_path):
    tree = {"a": {"b": 1, "c": {"choice": [1, 2]}, "d": [1, 2]}}
    assert flatten(tree) == {"a.b": 1, "a.c": {"choice": [1, 2]}, "a.d": [1, 2]}
    assert unflatten(flatten(tree)) == tree
    spec = tiny_spec(tmp_path, loss={"name": {"choice": ["dice", "focal"]}})
    sweep = load_spec(write_spec(spec))
    again = build_sweep(__import__("yaml").safe_load(sweep.resolved_yaml()))
    assert again.domains == sweep.domains and again.spec == sweep.spec


def test_parse_domain_kinds():
    assert parse_domain("k", {"int": [1, 1]}) == Domain("int", (1, 1))
    with pytest.raises(ValueError, match="non-empty list"):
        parse_domain("k", {"choice": []})


def test_every_shipped_sweep_validates(monkeypatch, tmp_path):
    for var in ("IDD_LITE_ROOT", "CAMVID_ROOT", "BDD100K_ROOT", "COMMA10K_ROOT", "CITYSCAPES_ROOT"):
        monkeypatch.setenv(var, str(tmp_path))
    files = sorted(ROOT.joinpath("sweeps").glob("*.yaml"))
    assert {f.stem for f in files} >= {"demo", "idd_lite_loss", "idd_lite_heads", "camvid_enet", "bdd100k_drivable",
                                       "comma10k_deeplabv3", "cityscapes_unet_encoders", "cityscapes_edgeailite"}
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Run: ") and "orchestrate run sweeps/" in first, f"{path}: first line says how to run it"
        load_spec(path)


def test_budgets_are_checked_before_anything_starts(write_spec, tmp_path):
    """search.constraints: names from orchestrator.budgets, a bound, a proxy for the proxy's figures; --set writes
    them as README's demo does."""
    spec = tiny_spec(tmp_path)
    sweep = load_spec(write_spec(spec), ["search.constraints=[{metric: params_m, max: 5}, {metric: gmacs, min: 0.1}]"])
    assert [c.model_dump() for c in sweep.spec.search.constraints] == [
        {"metric": "params_m", "max": 5.0, "min": None}, {"metric": "gmacs", "max": None, "min": 0.1}]
    for constraint, expected in [
        ("{metric: latncy/p50_ms, max: 8}", "search.constraints.0.metric: unknown budget metric 'latncy/p50_ms' (did "
                                            "you mean 'latency/p50_ms'? available: energy/mj_per_image, gmacs, "),
        ("{metric: params_m}", "search.constraints.0: params_m: a budget needs max (or min), e.g. {metric: params_m, "
                               "max: 8.0}"),
        ("{metric: size_mb, min: 9, max: 3}", "search.constraints.0: size_mb: min 9 is above max 3"),
        ("{metric: latency/p50_ms, max: 8}", "search.constraints.0.metric: latency/p50_ms is measured by the latency "
                                             "proxy before each trial trains: add search.latency_proxy"),
        ("{metric: energy/mj_per_image, max: 8}", "search.constraints.0.metric: energy/mj_per_image is measured by"),
    ]:
        assert expected in error_of(write_spec, spec, [f"search.constraints=[{constraint}]"])
    with_proxy = tiny_spec(tmp_path, search={**spec["search"], "latency_proxy": {"backend": "torch"}})
    assert load_spec(write_spec(with_proxy), ["search.constraints=[{metric: energy/mj_per_image, max: 8}]"])


def test_a_grouped_choice_with_keys_beside_it_reloads_from_its_resolved_spec(tmp_path):
    """``--set model.batchnorm=batch`` beside a choice between models: the spec as run (spec.yaml, which resume and the
    service's runner read) loads again to the same domains and keys, the options' labels unchanged."""
    from orchestrator.spec.keys import group_label

    spec = tiny_spec(tmp_path, model={"choice": [{"arch": "unet", "encoder": "resnet18"},
                                                 {"arch": "enet", "encoder": None}]})
    sweep = build_sweep(spec, ["model.batchnorm=batch"])
    again = load_spec_text(sweep.resolved_yaml())
    assert again.spec.model.batchnorm == "batch" and again.flat["model.batchnorm"] == "batch"
    assert [group_label(v) for v in again.domains["model"].values] == [
        group_label(v) for v in sweep.domains["model"].values] == ["arch=unet,encoder=resnet18", "arch=enet,encoder=None"]
