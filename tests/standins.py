"""Jetson-like devices on this machine, for tests: a real OpenSSH server on loopback (Debian's openssh-server; key
authentication only) whose ports are devices, each with its own stand-ins for trtexec, tegrastats, nvpmodel and
jetson_clocks on its PATH (``tests/fixtures/standins``: they print the tools' documented output) and its own HOME,
where the agent keeps its engine cache. There is no TensorRT, no Jetson and no GPU here."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STANDINS = FIXTURES / "standins"

# device profiles: TensorRT version of its trtexec, its tegrastats' lines (None: no tegrastats), nvpmodel, clocks
PROFILES = {
    "orin": {"trt": "10", "tegrastats": "tegrastats_orin_nano_r36.txt"},
    "xavier": {"trt": "8", "tegrastats": "tegrastats_agx_xavier_r32.txt"},
    "trt11": {"trt": "11", "tegrastats": "tegrastats_orin_nano_r36.txt"},
    "no-tegrastats": {"trt": "10", "tegrastats": None},
}


def device_profile(folder: Path, trt: str, tegrastats: str | None) -> dict[str, str]:
    """A folder of stand-in programs and the environment of a device that has them (PATH first, its own HOME, the
    fixtures its stand-ins print, and the file its trtexec counts engine builds in)."""
    bin_dir, home = folder / "bin", folder / "home"
    bin_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(exist_ok=True)
    tools = {"trtexec": "trtexec.py", "nvpmodel": "show.py STANDIN_NVPMODEL",
             "jetson_clocks": "show.py STANDIN_JETSON_CLOCKS", **({"tegrastats": "tegrastats.py"} if tegrastats else {})}
    for name, script in tools.items():
        program, *args = script.split()
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {sys.executable} {STANDINS / program} {" ".join(args)} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "STANDIN_TRT": trt,
           "STANDIN_BUILDS": str(folder / "builds.txt"),
           "STANDIN_NVPMODEL": str(FIXTURES / "jetson" / "nvpmodel_orin_nano.txt"),
           "STANDIN_JETSON_CLOCKS": str(FIXTURES / "jetson" / "jetson_clocks_orin_nano.txt")}
    if tegrastats:
        env["STANDIN_TEGRASTATS"] = str(FIXTURES / "jetson" / tegrastats)
    return env


def builds(env: dict[str, str]) -> int:
    """How many engines the device's trtexec has built."""
    path = Path(env["STANDIN_BUILDS"])
    return len(path.read_text().splitlines()) if path.is_file() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Targets:
    """The running server: ``url(name)`` is the address of a device (``plain``: this machine as it is, no stand-ins),
    ``options`` the client's ``--ssh-option`` values, ``env[name]`` each device's environment."""

    ports: dict[str, int]
    options: list[str]
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    def url(self, name: str = "plain") -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.ports[name]}"


def start_sshd(home: Path) -> tuple[subprocess.Popen, Targets] | None:
    """One sshd on loopback, one port per device profile (``Match LocalPort`` gives each its ``SetEnv``); None where
    openssh-server is not installed."""
    daemon = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(daemon).is_file():
        return None
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    ports = {name: free_port() for name in ("plain", *PROFILES)}
    targets = Targets(ports, [f"IdentityFile={home / 'client_key'}", "StrictHostKeyChecking=no",
                              "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"])
    config = "".join(f"Port {port}\n" for port in ports.values()) + (
        f"ListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\nAuthorizedKeysFile {home / 'authorized_keys'}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
        f"StrictModes no\nPermitRootLogin prohibit-password\nPidFile {home / 'sshd.pid'}\n"
        f"Subsystem sftp internal-sftp\nAcceptEnv none\n")
    for name, profile in PROFILES.items():
        targets.env[name] = device_profile(home / name, profile["trt"], profile["tegrastats"])
        config += f"Match LocalPort {ports[name]}\n    SetEnv " + " ".join(
            f"{k}={v}" for k, v in targets.env[name].items()) + "\n"
    (home / "sshd_config").write_text(config)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    server = subprocess.Popen([daemon, "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    for port in ports.values():
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.1)
    return server, targets
