"""Remote targets (a Jetson) over SSH with the system OpenSSH client, so ``~/.ssh/config`` aliases and keys work.

A target is a ``RemoteDevice``: a temporary folder there holds the self-contained agent and the files put there, and
is removed at the end; the agent times onnxruntime, or finds, builds and times trtexec's engines (kept on the target
across measurements, ``latency.engines``), sampling the target's power with tegrastats meanwhile. ssh and scp run
with an argument list (no local shell), their ``-o`` options checked against a known-safe set
(``targets.ssh_option_args``), the destination after ``--``; every remote command is built with ``shlex.join`` (no
argument reaches the remote shell unquoted), but for ``FACTS_SCRIPT``, a fixed text.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError
from orchestrator.latency.bench import ORT_PROVIDERS, LatencyResult, power_kind, result_from_agent
from orchestrator.latency.engines import AGENT, agent_answer, measure_trtexec
from orchestrator.latency.targets import SshTarget, resolve_target, ssh_option_args
from orchestrator.latency.tegra import parse_jetson_clocks, parse_nvpmodel

# what a Jetson says about itself: model, L4T release, TensorRT package, power mode, clocks (jetson_clocks --show
# answers root only: elsewhere the facts say the clocks are unknown), architecture
FACTS_SCRIPT = ("cat /proc/device-tree/model 2>/dev/null; echo; echo ---; cat /etc/nv_tegra_release 2>/dev/null; "
                "echo ---; dpkg-query -W -f='${Version}' tensorrt 2>/dev/null || "
                "dpkg-query -W -f='${Version}' libnvinfer8 2>/dev/null; echo; echo ---; "
                "nvpmodel -q 2>/dev/null; echo ---; jetson_clocks --show 2>&1; echo ---; uname -m")


def _ssh(target: SshTarget, options: list[str], command: list[str] | str, timeout: float = 600) -> str:
    remote = command if isinstance(command, str) else shlex.join(command)
    argv = ["ssh", *ssh_option_args(options), *(["-p", str(target.port)] if target.port else []), "--",
            target.destination, remote]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SegsweepError(f"{target.url}: no answer within {timeout:.0f} s") from None
    if done.returncode == 255:
        last = (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
        raise SegsweepError(f"{target.url}: cannot connect ({last})")
    if done.returncode != 0:
        raise RemoteCommandError(done.returncode, done.stdout, done.stderr)
    return done.stdout


class RemoteCommandError(SegsweepError):
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr
        last = (stderr.strip() or stdout.strip() or "no output").splitlines()[-1]
        super().__init__(f"remote command failed (exit {code}): {last}")


def _copy(target: SshTarget, options: list[str], files: list[Path], folder: str) -> None:
    argv = ["scp", "-q", *ssh_option_args(options), *(["-P", str(target.port)] if target.port else []), "--",
            *map(str, files), f"{target.destination}:{folder}/"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SegsweepError(f"{target.url}: copying the model failed ({done.stderr.strip().splitlines()[-1:]})")


def parse_facts(text: str) -> dict[str, Any]:
    """Device facts from FACTS_SCRIPT's output: model, L4T release, TensorRT, nvpmodel mode (``MAXN (0)``), and from
    ``jetson_clocks --show`` whether the clocks are pinned and the GPU's and memory's clocks (``tegra``)."""
    parts = [p.strip() for p in text.split("---")]
    parts += [""] * (6 - len(parts))
    facts: dict[str, Any] = {"model": parts[0].strip("\x00 "), "arch": parts[5]}
    release = re.search(r"# R(\d+) \(release\), REVISION: ([\d.]+)", parts[1])
    if release:
        facts["l4t"] = f"R{release.group(1)}.{release.group(2)}"
    if parts[2]:
        facts["tensorrt"] = parts[2]
    facts["nvpmodel"] = parse_nvpmodel(parts[3])
    facts |= parse_jetson_clocks(parts[4])
    if "jetson_clocks" not in facts and "root" in parts[4]:
        facts["jetson_clocks"] = "unknown (jetson_clocks --show answers root only)"
    return {k: v for k, v in facts.items() if v}


class RemoteDevice:
    """An SSH target as ``latency.engines`` measures on it: a temporary folder holding the agent and the files put
    there (each copied once), removed at the end."""

    def __init__(self, target: SshTarget, options: list[str], remote_python: str) -> None:
        self.target, self.options, self.python, self.where = target, options, remote_python, target.url
        self.folder = f"/tmp/segsweep-bench-{uuid.uuid4().hex[:10]}"
        self._put: dict[Path, str] = {}

    def __enter__(self) -> RemoteDevice:
        _ssh(self.target, self.options, ["mkdir", "-p", self.folder], timeout=60)
        self.put(AGENT)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(SegsweepError):  # cleanup is best effort; the measurement (or its error) matters
            _ssh(self.target, self.options, ["rm", "-rf", self.folder], timeout=60)

    def agent(self, *args: str, label: str | None = None) -> dict[str, Any]:
        try:
            stdout, stderr = _ssh(self.target, self.options, [self.python, f"{self.folder}/agent.py", *args]), ""
        except RemoteCommandError as e:
            stdout, stderr = e.stdout, e.stderr
        return agent_answer(self.where, label or args[0], stdout, stderr, failed=label is not None)

    def put(self, path: Path) -> str:
        path = Path(path)
        if path not in self._put:
            _copy(self.target, self.options, [path], self.folder)
            self._put[path] = f"{self.folder}/{path.name}"
        return self._put[path]

    def scratch(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def facts(self) -> dict[str, Any]:
        return parse_facts(_ssh(self.target, self.options, FACTS_SCRIPT, timeout=60))


def measure_remote(url: str, backend: str, onnx_path: Path, shape: list[int], warmup: int, iters: int,
                   fp16: bool = False, remote_python: str = "python3", ssh_options: list[str] | None = None,
                   threads: int | None = None) -> LatencyResult:
    """Time ``onnx_path`` on the target (``ssh://...`` or a registered name: then its own address, options and
    interpreter) with ``backend``: onnxruntime through the agent, or trtexec with the target's cached engine."""
    if backend not in (*ORT_PROVIDERS, "trtexec"):
        raise SegsweepError(f"{backend}: remote targets run onnxruntime backends or trtexec, not PyTorch")
    target, options, remote_python = resolve_target(url, tuple(ssh_options or ()), remote_python)
    if not Path(onnx_path).is_file():
        raise SegsweepError(f"{onnx_path}: no such ONNX file")
    with RemoteDevice(target, options, remote_python) as device:
        facts = device.facts()
        if backend == "trtexec":
            result = measure_trtexec(device, Path(onnx_path), shape, iters, fp16, facts.get("model") or target.host,
                                     {k: facts[k] for k in ("l4t",) if k in facts})
        else:
            raw = device.agent(device.put(Path(onnx_path)), "--shape", "x".join(map(str, shape)), "--warmup",
                               str(warmup), "--iters", str(iters), "--provider", ORT_PROVIDERS[backend], "--power",
                               power_kind(backend), *(["--threads", str(threads)] if threads else []),
                               *(["--fp16"] if fp16 else []), label=backend)
            result = result_from_agent(backend, device.where, shape, fp16, raw)
    result.extra["device_facts"] = facts
    return result
