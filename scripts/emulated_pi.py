#!/usr/bin/env python3
"""A device to try edgeopt's SSH flow without a board: a real OpenSSH server on the loopback address.

``start_sshd`` starts Debian's ``sshd`` (no systemd) on 127.0.0.1 with throwaway host and user keys and writes a
device profile for it; ``stop_sshd`` stops it by its pid. With ``chroot`` the server logs its user into that root
filesystem (``ChrootDirectory``): an arm64 Debian userland there, run by qemu-user through binfmt, is the emulated
Raspberry Pi. Without it the "device" is this machine reached over SSH (what the default test run uses).

Stdlib only; run as root (sshd must be able to chroot and to switch to the login user).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeopt-emulated", "-f", str(path)],
                       check=True)


def _sshd_config(state: Path, port: int, chroot: Path | None) -> str:
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {state / 'host_key'}",
             f"PidFile {state / 'sshd.pid'}", f"AuthorizedKeysFile {state / 'user_key.pub'}",
             "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
             "PermitRootLogin prohibit-password", "AllowTcpForwarding no", "X11Forwarding no",
             "PermitUserEnvironment no", "LogLevel ERROR"]
    if chroot is not None:
        lines.append(f"ChrootDirectory {chroot}")
    return "\n".join(lines) + "\n"


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def start_sshd(state: Path, port: int | None = None, chroot: Path | None = None, user: str | None = None,
               python: str = "python3", work_dir: str | None = None, emulated: bool = False,
               name: str = "loopback") -> dict:
    """Start sshd on 127.0.0.1 with keys in ``state``; returns the device profile (also written to
    ``state/<name>.yaml``). The profile's known_hosts holds the server's key, so host keys are checked."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server openssh-client")
    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    port = port or free_port()
    user = user or getpass.getuser()
    _keygen(state / "host_key")
    _keygen(state / "user_key")
    (state / "sshd_config").write_text(_sshd_config(state, port, chroot))
    host_key = (state / "host_key.pub").read_text().split()
    (state / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = open(state / "sshd.log", "ab")  # noqa: SIM115 - handed to the server process
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(state / "sshd_config")], stdout=log, stderr=log,
                            start_new_session=True)
    (state / "sshd.pid").write_text(f"{proc.pid}\n")
    _wait_listening(port, proc)
    profile = {"name": name, "kind": "ssh", "host": "127.0.0.1", "port": port, "user": user,
               "identity": str(state / "user_key"), "known_hosts": str(state / "known_hosts"), "python": python,
               "work_dir": work_dir or str(state / "device-work"), "emulated": emulated}
    (state / f"{name}.yaml").write_text("".join(f"{k}: {_yaml_scalar(v)}\n" for k, v in profile.items()))
    return profile


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop_sshd(state: Path) -> None:
    """Stop the sshd started in ``state`` (by the pid it recorded); nothing happens if it is not running."""
    pid_file = Path(state) / "sshd.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


__all__ = ["free_port", "start_sshd", "stop_sshd"]
