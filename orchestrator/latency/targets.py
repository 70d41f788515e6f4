"""Where a model is timed, other than this machine: an SSH target, given as ``ssh://[user@]host[:port]`` or as the
name of a target the admin registered (``orchestrate target add jetson1 ssh://nvidia@10.0.0.5 --ssh-option ...``).

ssh runs with an argument list, never through a shell, and its ``-o`` options come from a known-safe set: an option
that can run a command on this machine (ProxyCommand, LocalCommand, KnownHostsCommand, Match exec, ...), read
another configuration (Include), forward this machine's environment, agent or ports, or load a library is refused
with one line, whoever asks (``orchestrate bench --ssh-option``, a sweep's ``ssh_options``, a registered target).
Anything more (a jump host, say) belongs in the server user's own ``~/.ssh/config``, where an alias names it.

Named targets live in one JSON file: ``$SEGSWEEP_TARGETS``, else ``targets.json`` in the service's data folder
(``$SEGSWEEP_DATA``, default ``segsweep-data``); ``orchestrate serve`` points ``$SEGSWEEP_TARGETS`` at its own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.errors import SegsweepError, closest
from orchestrator.files import write_text_whole

TARGETS_ENV = "SEGSWEEP_TARGETS"
TARGET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]*$")  # a name, an IPv4 or IPv6 address, an ~/.ssh/config alias
_OPTION = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=|\s)\s*(.*?)\s*$", re.DOTALL)  # ssh -o: "Key=Value" or "Key Value"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# ssh -o options that choose how to connect and authenticate, and nothing else
SAFE_SSH_OPTIONS = {name.lower(): name for name in (
    "AddressFamily", "BatchMode", "CASignatureAlgorithms", "CertificateFile", "CheckHostIP", "Ciphers", "Compression",
    "ConnectionAttempts", "ConnectTimeout", "FingerprintHash", "GlobalKnownHostsFile", "HostKeyAlgorithms",
    "HostKeyAlias", "IdentitiesOnly", "IdentityFile", "IPQoS", "KexAlgorithms", "LogLevel", "MACs",
    "NumberOfPasswordPrompts", "Port", "PreferredAuthentications", "PubkeyAcceptedAlgorithms",
    "PubkeyAcceptedKeyTypes", "PubkeyAuthentication", "RekeyLimit", "ServerAliveCountMax", "ServerAliveInterval", "StrictHostKeyChecking",
    "TCPKeepAlive", "UpdateHostKeys", "User", "UserKnownHostsFile", "VerifyHostKeyDNS")}
# what the refusal says of the options people reach for (any other unknown one gets the list of allowed ones)
_WHY = {
    **dict.fromkeys(("proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand", "match"),
                    "it runs a command on this machine"),
    "proxyjump": "it starts another ssh with options of its own; name the jump host in ~/.ssh/config instead",
    "include": "it reads another configuration file, which may hold any option",
    **dict.fromkeys(("sendenv", "setenv"), "it sends this machine's environment to the target"),
    **dict.fromkeys(("localforward", "remoteforward", "dynamicforward", "forwardagent", "forwardx11",
                     "forwardx11trusted", "tunnel", "tunneldevice", "gatewayports", "stdinnull",
                     "forkafterauthentication", "sessiontype", "remotecommand", "requesttty"),
                    "it forwards ports, agents or sessions, or changes what runs on the target"),
    **dict.fromkeys(("pkcs11provider", "securitykeyprovider", "identityagent", "controlmaster", "controlpath",
                     "controlpersist", "escapechar", "xauthlocation", "revokedhostkeys", "hostbasedauthentication"),
                    "it loads a program, library or socket of this machine"),
}


class TargetError(SegsweepError, ValueError):
    """A target or ssh option that cannot be used; a ValueError too, so that the spec's schema reports it at its key."""


@dataclass(frozen=True)
class SshTarget:
    url: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        """``ssh://[user@]host[:port]`` and nothing else; a user or host that could pass for an option (``-o...``) or
        carry shell characters is refused."""
        expected = f"{url}: expected ssh://[user@]host[:port] (an ~/.ssh/config alias works)"
        try:
            parsed = urlparse(url)
            port = parsed.port
        except ValueError:
            raise TargetError(expected) from None
        extra = parsed.path not in ("", "/") or parsed.params or parsed.query or parsed.fragment or parsed.password
        if parsed.scheme != "ssh" or not parsed.hostname or extra:
            raise TargetError(expected)
        if not _HOST.match(parsed.hostname) or (parsed.username is not None and not _USER.match(parsed.username)):
            raise TargetError(f"{url}: a user or host name is letters, digits and . _ - (and : in an IPv6 address)")
        return cls(url=url, host=parsed.hostname, user=parsed.username, port=port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def ssh_option(option: str) -> str:
    """One ``-o`` option, checked against ``SAFE_SSH_OPTIONS``, as ``Key=Value`` (the key as ssh spells it)."""
    match = _OPTION.match(option) if isinstance(option, str) else None
    if match is None or not match.group(2):
        raise TargetError(f"ssh option {option!r}: expected KEY=VALUE, e.g. IdentityFile=~/.ssh/jetson")
    key, value = match.group(1), match.group(2)
    if key.lower() not in SAFE_SSH_OPTIONS:
        why = _WHY.get(key.lower())
        hint = closest(key, SAFE_SSH_OPTIONS.values()) if why is None else None
        reason = why or (f"did you mean {hint!r}? " if hint else "") + "not one of the options segsweep passes on"
        raise TargetError(f"ssh option {key}: refused ({reason}); allowed: {', '.join(SAFE_SSH_OPTIONS.values())}")
    if _CONTROL.search(value):
        raise TargetError(f"ssh option {key}: its value has a control character")
    return f"{SAFE_SSH_OPTIONS[key.lower()]}={value}"


def ssh_option_args(options: list[str] | tuple[str, ...]) -> list[str]:
    """ssh's (and scp's) ``-o`` arguments: segsweep's own (batch mode, a connect timeout), then each checked option."""
    out = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    for option in options:
        out += ["-o", ssh_option(option)]
    return out


@dataclass(frozen=True)
class NamedTarget:
    """A target the admin registered: the spec names it; its address, ssh options and interpreter stay here."""

    name: str
    url: str
    ssh_options: tuple[str, ...] = ()
    remote_python: str = "python3"

    def __post_init__(self) -> None:
        if not TARGET_NAME.match(self.name) or self.name == "local":
            raise TargetError(f"target name {self.name!r}: letters, digits, _ and -, starting with a letter "
                              f"('local' is this machine)")
        SshTarget.parse(self.url)
        for option in self.ssh_options:
            ssh_option(option)
        if not self.remote_python or _CONTROL.search(self.remote_python) or self.remote_python.startswith("-"):
            raise TargetError(f"--remote-python {self.remote_python!r}: a program on the target, e.g. python3")


def targets_file() -> Path:
    """The registry of named targets (see the module docstring)."""
    explicit = os.environ.get(TARGETS_ENV)
    return Path(explicit) if explicit else Path(os.environ.get("SEGSWEEP_DATA") or "segsweep-data") / "targets.json"


def load_targets(path: Path | None = None) -> dict[str, NamedTarget]:
    path = path or targets_file()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {e["name"]: NamedTarget(e["name"], e["url"], tuple(e.get("ssh_options", ())),
                                       e.get("remote_python", "python3")) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SegsweepError(f"{path}: not a segsweep targets file ({type(e).__name__}: {e})") from None


def save_targets(targets: dict[str, NamedTarget], path: Path | None = None) -> None:
    path = path or targets_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_whole(path, json.dumps([asdict(t) for t in sorted(targets.values(), key=lambda t: t.name)], indent=1))


def check_target(value: str) -> None:
    """A spec's target: ``local``, a well-formed ``ssh://`` URL, or a registered name."""
    if value == "local":
        return
    if "://" in value:
        SshTarget.parse(value)
        return
    known = load_targets()
    if value not in known:
        hint = closest(value, known)
        raise TargetError(f"unknown target '{value}' ({f'did you mean {hint!r}? ' if hint else ''}registered: "
                          f"{', '.join(sorted(known)) or 'none'}; an admin adds one with orchestrate target add "
                          f"NAME ssh://user@host); or local, or ssh://[user@]host[:port]")


def resolve_target(target: str, ssh_options: tuple[str, ...] = (),
                   remote_python: str = "python3") -> tuple[SshTarget, list[str], str]:
    """An ``ssh://`` target with the caller's options and interpreter, or a registered one with its own (the caller's
    options after them), named by its name in messages and results: its address stays the admin's. Every option is
    checked (``ssh_option``) before anything runs."""
    if "://" in target:
        resolved = SshTarget.parse(target), list(ssh_options), remote_python
    elif target == "local":
        raise TargetError("local: this machine's measurements run here, not over ssh")
    else:
        check_target(target)
        named = load_targets()[target]
        resolved = (replace(SshTarget.parse(named.url), url=target), [*named.ssh_options, *ssh_options],
                    named.remote_python)
    for option in resolved[1]:
        ssh_option(option)
    return resolved
