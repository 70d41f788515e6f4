"""Remote targets (a Jetson) over SSH with the system OpenSSH client, so ``~/.ssh/config`` aliases and keys work.

The model and the self-contained agent are copied into a temporary folder on the target, timed there (onnxruntime
through the agent, or trtexec), and the folder is removed. ssh and scp run with an argument list (no local shell),
their ``-o`` options checked against a known-safe set (``targets.ssh_option_args``), the destination after ``--``;
every remote command is built with ``shlex.join``: no argument reaches the remote shell unquoted.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import uuid
from pathlib import Path

from orchestrator.errors import SegsweepError
from orchestrator.latency.bench import ORT_PROVIDERS, LatencyResult, result_from_agent, result_from_trtexec
from orchestrator.latency.targets import SshTarget, resolve_target, ssh_option_args
from orchestrator.latency.trtexec import trtexec_command

AGENT = Path(__file__).with_name("agent.py")
FACTS_SCRIPT = ("cat /proc/device-tree/model 2>/dev/null; echo; echo ---; cat /etc/nv_tegra_release 2>/dev/null; "
                "echo ---; dpkg-query -W -f='${Version}' tensorrt 2>/dev/null || "
                "dpkg-query -W -f='${Version}' libnvinfer8 2>/dev/null; echo; echo ---; "
                "nvpmodel -q 2>/dev/null | head -n 2; echo ---; jetson_clocks --show 2>/dev/null | head -n 3; "
                "echo ---; uname -m")


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


def parse_facts(text: str) -> dict[str, str]:
    """Device facts from FACTS_SCRIPT's output: model, L4T release, TensorRT, nvpmodel mode, jetson_clocks."""
    parts = [p.strip() for p in text.split("---")]
    parts += [""] * (6 - len(parts))
    facts = {"model": parts[0].strip("\x00 "), "arch": parts[5]}
    release = re.search(r"# R(\d+) \(release\), REVISION: ([\d.]+)", parts[1])
    if release:
        facts["l4t"] = f"R{release.group(1)}.{release.group(2)}"
    if parts[2]:
        facts["tensorrt"] = parts[2]
    mode = re.search(r"NV Power Mode: (\S+)", parts[3])
    if mode:
        facts["nvpmodel"] = mode.group(1) + (f" ({parts[3].splitlines()[1].strip()})" if len(parts[3].splitlines()) > 1 else "")
    if parts[4]:
        facts["jetson_clocks"] = "on" if re.search(r"MaxFreq=(\d+).*CurrentFreq=\1", parts[4]) else parts[4].splitlines()[0]
    return {k: v for k, v in facts.items() if v}


def measure_remote(url: str, backend: str, onnx_path: Path, shape: list[int], warmup: int, iters: int,
                   fp16: bool = False, remote_python: str = "python3", ssh_options: list[str] | None = None,
                   threads: int | None = None) -> LatencyResult:
    """Copy ``onnx_path`` to the target (``ssh://...`` or a registered name: then its own address, options and
    interpreter), time it there with ``backend`` (ort-* through the agent, or trtexec)."""
    if backend not in (*ORT_PROVIDERS, "trtexec"):
        raise SegsweepError(f"{backend}: remote targets run onnxruntime backends or trtexec, not PyTorch")
    target, options, remote_python = resolve_target(url, tuple(ssh_options or ()), remote_python)
    if not Path(onnx_path).is_file():
        raise SegsweepError(f"{onnx_path}: no such ONNX file")
    folder = f"/tmp/segsweep-bench-{uuid.uuid4().hex[:10]}"
    _ssh(target, options, ["mkdir", "-p", folder], timeout=60)
    try:
        _copy(target, options, [Path(onnx_path), AGENT], folder)
        model = f"{folder}/{Path(onnx_path).name}"
        facts = parse_facts(_ssh(target, options, FACTS_SCRIPT, timeout=60))
        if backend == "trtexec":
            find = _ssh(target, options, "command -v trtexec || ls /usr/src/tensorrt/bin/trtexec 2>/dev/null || true",
                        timeout=60)
            trtexec = find.strip().splitlines()[0] if find.strip() else ""
            if not trtexec:
                raise SegsweepError(f"{url}: trtexec: not found on the target (not on PATH nor in "
                                    f"/usr/src/tensorrt/bin); install TensorRT there or use --backend ort-cpu")
            try:
                out = _ssh(target, options, trtexec_command(trtexec, model, 200, iters, fp16))
            except RemoteCommandError as e:
                raise SegsweepError(f"{url}: trtexec failed (exit {e.code}): "
                                    f"{(e.stdout + e.stderr).strip().splitlines()[-1:]}") from None
            result = result_from_trtexec(url, shape, fp16, out, facts.get("model") or target.host,
                                         {k: facts[k] for k in ("tensorrt", "l4t") if k in facts})
        else:
            argv = [remote_python, f"{folder}/agent.py", model, "--shape", "x".join(map(str, shape)),
                    "--warmup", str(warmup), "--iters", str(iters), "--provider", ORT_PROVIDERS[backend],
                    *(["--threads", str(threads)] if threads else [])]
            try:
                raw = json.loads(_ssh(target, options, argv + (["--fp16"] if fp16 else [])).strip().splitlines()[-1])
            except RemoteCommandError as e:
                detail = e.stdout.strip().splitlines()[-1:] or e.stderr.strip().splitlines()[-1:]
                raise SegsweepError(f"{url}: {backend} failed: {detail[0] if detail else e}") from None
            result = result_from_agent(backend, url, shape, fp16, raw)
        result.extra["device_facts"] = facts
        return result
    finally:
        with contextlib.suppress(SegsweepError):  # cleanup is best effort; the measurement (or its error) matters
            _ssh(target, options, ["rm", "-rf", folder], timeout=60)
