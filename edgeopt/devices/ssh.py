"""A Linux board (a Raspberry Pi, or the emulated arm64 one) reached with the OpenSSH client.

Why the OpenSSH client and not a Python SSH library: it is what a Pi user already has set up; their
``~/.ssh/config`` aliases, ProxyJump, agent, hardware keys and ``known_hosts`` work unchanged, and connection
sharing (ControlMaster) makes each command cost one round trip. Nothing is installed on the device for edgeopt
itself: every command runs the stdlib-only ``agent.py`` from its source on the device's Python.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shlex
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.bundle.integrity import file_sha256
from edgeopt.core.contracts import Device
from edgeopt.core.manifest import MANIFEST, read_manifest
from edgeopt.devices.profile import SshProfile, parse_profile
from edgeopt.errors import DeviceError

AGENT = (Path(__file__).parent / "agent.py").read_text()
# the agent's source travels base64-encoded in the command line: no quoting of its text, no file on the device
BOOT = "import base64;exec(compile(base64.b64decode('{}'),'edgeopt-agent','exec'))"
DETECT_CHUNK = 200  # images per detection command
UNREACHABLE = ("Could not resolve", "Connection refused", "timed out", "No route to host", "Network is unreachable",
               "Connection reset", "kex_exchange_identification")


class SshDevice(Device):
    """Runs bundles on a remote Linux board: push (only changed files), verify (sha256 there), bench, detect."""

    def __init__(self, profile: dict[str, Any], source: str = "device profile") -> None:
        self.profile: SshProfile = parse_profile(profile, source)
        self.name = self.profile.name
        self.emulated = self.profile.emulated
        self.fingerprint = hashlib.sha256(AGENT.encode()).hexdigest()[:16]  # it measures: its edits re-measure

    # ---- transport -------------------------------------------------------------------------------------------
    def _ssh(self) -> list[str]:
        p = self.profile
        check = "yes" if p.host_key_check == "strict" else "accept-new"
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={p.connect_timeout}",
               "-o", f"StrictHostKeyChecking={check}", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
               *_sharing(self._trust_key()),
               "-o", "LogLevel=ERROR"]
        if p.port:
            cmd += ["-p", str(p.port)]
        if p.identity:
            cmd += ["-i", str(Path(p.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if p.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={Path(p.known_hosts).expanduser()}"]
        if p.user:
            cmd += ["-l", p.user]
        return cmd + [p.host]

    def _trust_key(self) -> str:
        """Connections are shared only between commands with the same keys and host-key rules (a connection
        opened under one known_hosts must not serve a profile that trusts another)."""
        p = self.profile
        return hashlib.sha256(repr((p.identity, p.known_hosts, p.host_key_check)).encode()).hexdigest()[:12]

    def _where(self) -> str:
        p = self.profile
        return f"{p.user + '@' if p.user else ''}{p.host}{':' + str(p.port) if p.port else ''}"

    def _failure(self, stderr: str, what: str, code: int) -> DeviceError:
        """The DeviceError for a failed ssh command: unreachable, refused host key, denied login, dropped link."""
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {code}"
        where = f"device '{self.name}' ({self._where()})"
        if code == 255 and ("Host key verification failed" in stderr or "HOST IDENTIFICATION HAS CHANGED" in stderr):
            return DeviceError(f"{where}: its host key is unknown or not the one recorded in known_hosts",
                               hint="check the device, then add its key (ssh-keyscan, or one `ssh` by hand); "
                                    "`host_key_check: accept-new` trusts a device on first contact")
        if code == 255 and "Permission denied" in stderr:
            return DeviceError(f"{where}: login refused ({last})",
                               hint="check user and identity in the profile; `ssh` to it by hand must work "
                                    "without a password")
        if code == 255 and any(s in stderr for s in UNREACHABLE):
            return DeviceError(f"cannot reach {where}: {last}",
                               hint="is it on and on the network? finished work is cached; re-run when it is back")
        if code == 255:
            return DeviceError(f"the connection to {where} failed or dropped during {what}: {last}",
                               hint="re-run when the device is back; finished work is cached and resumes")
        return DeviceError(f"{what} failed on {where}: {last}")

    def _exec(self, remote: str, what: str, data: bytes | None = None, timeout: float | None = None,
              agent: bool = False) -> str:
        """stdout of ``remote`` run by the device's shell. stdin is ``data`` or nothing (never the user's
        terminal); stderr goes to a file, since a shared connection's master may keep a pipe open."""
        limit = timeout or self.profile.command_timeout
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.run([*self._ssh(), "--", remote], input=data, stdout=subprocess.PIPE, stderr=err,
                                      stdin=None if data is not None else subprocess.DEVNULL, timeout=limit + 30)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"{what} on device '{self.name}' did not finish within {limit} s",
                                  hint="raise command_timeout in the device profile, or check the device") from None
            except FileNotFoundError:
                raise DeviceError("the OpenSSH client (ssh) is not installed",
                                  hint="apt-get install openssh-client") from None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        stdout = proc.stdout.decode(errors="replace")
        if proc.returncode == 0 or (agent and proc.returncode == 3 and stdout.strip()):  # 3: the agent's own error
            return stdout
        if agent and proc.returncode in (126, 127):
            state = "is not executable" if proc.returncode == 126 else "was not found"
            raise DeviceError(f"'{self.profile.python or 'python3'}' {state} on device '{self.name}'",
                              hint="set `python:` in the device profile, or run `edgeopt device setup`")
        raise self._failure(stderr, what, proc.returncode)

    def _python(self) -> str:
        """Shell words that run the device's Python: the profile's, else the setup venv's, else python3."""
        if self.profile.python:
            return _shell_path(self.profile.python)
        venv = _shell_path(self.remote_path("venv", "bin", "python"))
        return f'P={venv}; [ -x "$P" ] || P=python3; exec "$P"'

    def agent(self, command: str, *args: str, data: bytes | None = None, what: str | None = None,
              timeout: float | None = None) -> Any:
        """Run one agent command on the device; its JSON answer (a DeviceError when it reports an error)."""
        boot = BOOT.format(base64.b64encode(AGENT.encode()).decode())
        limit = int(timeout or self.profile.command_timeout)  # the agent stops what it started by then
        remote = " ".join([f"export EDGEOPT_TIMEOUT={limit};", self._python(), "-c", shlex.quote(boot), command,
                           *map(shlex.quote, args)])
        out = self._exec(remote, what or command, data, timeout, agent=True)
        lines = [line for line in out.strip().splitlines() if line.startswith("{")]
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise DeviceError(f"device '{self.name}' gave no answer to {what or command}: {out.strip()[-200:]!r}") \
                from None
        if isinstance(answer, dict) and "error" in answer:
            raise DeviceError(f"{what or command} failed on device '{self.name}': {answer['error']}")
        return answer

    def run(self, command: list[str], timeout: float = 1800) -> str:
        """Run ``command`` (argv) on the device; its stdout."""
        return self._exec(" ".join(map(shlex.quote, command)), command[0], timeout=timeout)  # exit != 0 raises

    # ---- the Device contract ---------------------------------------------------------------------------------
    def describe(self, runtimes: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
        """CPU model, architecture, cores, int8 flags, governor, temperature, throttling, memory, OS, Python and
        which runtime modules import on the device (``runtimes``: target -> modules, any one suffices)."""
        modules = sorted({m for names in (runtimes or {}).values() for m in names})
        info = self.agent("describe", json.dumps(modules), what="describe")
        found = info.pop("runtimes", {})
        info["runtimes"] = {target: next(({"module": m, **found[m]} for m in names if found.get(m, {}).get("ok")),
                                         {"ok": False, "error": "; ".join(f"{m}: {found.get(m, {}).get('error')}"
                                                                          for m in names)})
                            for target, names in (runtimes or {}).items()}
        return {"name": self.name, "kind": "ssh", "host": self._where(), "emulated": self.emulated,
                "description": self.profile.description, **info}

    def remote_path(self, *parts: str) -> str:
        return "/".join([self.profile.work_dir.rstrip("/"), *parts])

    def push_files(self, files: dict[str, Path], remote_dir: str, what: str) -> dict[str, str]:
        """Copy ``files`` (name there -> local path) into ``remote_dir``, only those whose sha256 differs there;
        returns the device's sha256 of every file in ``remote_dir`` afterwards."""
        there = self.agent("hashes", remote_dir, what=f"listing {what}")
        stale = {name: path for name, path in files.items() if there.get(name) != file_sha256(path)}
        if stale:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:  # links travel as their files
                for name, path in sorted(stale.items()):
                    tar.add(path, arcname=name, recursive=False)
            self.agent("unpack", remote_dir, data=buffer.getvalue(), what=f"copying {what}")
            there = self.agent("hashes", remote_dir, what=f"listing {what}")
        return there

    def _remove_extras(self, remote_dir: str, keep: set[str], there: dict[str, str]) -> None:
        extra = sorted(set(there) - keep)
        if extra:
            self.agent("remove", remote_dir, json.dumps(extra), what="removing files not in the bundle")

    def bundle_dir(self, bundle: Path) -> str:
        """Where ``bundle`` lives on the device: ``<work_dir>/bundles/<cache key>``."""
        return self.remote_path("bundles", Path(bundle).name)

    def push(self, bundle: Path) -> str:
        """Copy the bundle to :meth:`bundle_dir` (only files whose sha256 differs there)."""
        bundle = Path(bundle)
        files = _bundle_files(bundle)
        remote = self.bundle_dir(bundle)
        there = self.push_files(files, remote, f"bundle {bundle.name}")
        self._remove_extras(remote, set(files), there)  # e.g. a module planted beside run.py would be imported
        return remote

    def verify(self, bundle: Path) -> list[str]:
        """Files of the pushed bundle whose sha256 on the device differs from its manifest here (the manifest
        itself included): computed on the device, so a file changed there is refused before it runs."""
        bundle = Path(bundle)
        there = self.agent("hashes", self.bundle_dir(bundle), what=f"checksums of {bundle.name}")
        expected = {**read_manifest(bundle).files, MANIFEST: file_sha256(bundle / MANIFEST)}
        shipped = set(_bundle_files(bundle))
        changed = [name for name, digest in expected.items() if there.get(name) != digest]
        return changed + [f"{name} (not in the bundle)" for name in sorted(set(there) - shipped - set(expected))]

    def bench(self, bundle: Path, threads: int, warmup: int, runs: int, profile: bool = False) -> dict[str, Any]:
        """``run.py --bench`` on the pushed (and verified) bundle, with temperature and throttling read before and
        after. It does not push again: what runs is what was verified."""
        remote = self.bundle_dir(bundle)
        args = ["--threads", str(threads), "--warmup", str(warmup), "--runs", str(runs)]
        args += ["--profile"] if profile else []
        figures = self.agent("bench", remote, json.dumps(args), what=f"benchmark of {Path(bundle).name}")
        before, after = figures.get("throttled_before"), figures.get("throttled_after")
        if before is None or after is None:
            figures["throttled"] = None  # no Raspberry Pi firmware to ask
        else:  # throttled/capped/under-voltage now, or any of it newly recorded since before the run (sticky bits)
            figures["throttled"] = bool((before | after) & 0xF or (after & ~before) & 0xF0000)
        figures["emulated"] = self.emulated
        return figures

    def detect(self, bundle: Path, images: list[Path], dataset_key: str, threads: int) -> list[dict[str, Any]]:
        """Detections at mAP settings for ``images`` by the pushed bundle on the device (images pushed once, kept
        under ``<work_dir>/data/<dataset_key>``); one record per image, in order."""
        remote = self.bundle_dir(bundle)
        names = {f"{i:06d}{Path(p).suffix.lower()}": Path(p) for i, p in enumerate(images)}
        data_dir = self.remote_path("data", dataset_key)
        self.push_files(names, data_dir, f"{len(names)} validation images")
        records: list[dict[str, Any]] = []
        names_list = list(names)
        for start in range(0, len(names_list), DETECT_CHUNK):  # bounded memory and time per command
            chunk = "\n".join(names_list[start:start + DETECT_CHUNK]) + "\n"
            self.agent("unpack", data_dir, data=tar_bytes({"images.txt": chunk.encode()}), what="image list")
            out = self.agent("detect", remote, data_dir + "/images.txt", json.dumps(["--threads", str(threads)]),
                             what=f"detection with {Path(bundle).name}")
            records += out["detections"]
        if len(records) != len(images):
            raise DeviceError(f"device '{self.name}' returned {len(records)} detections for {len(images)} images")
        return records


def _bundle_files(bundle: Path) -> dict[str, Path]:
    """The bundle's files by their name inside it (bytecode caches are not part of a bundle)."""
    return {str(p.relative_to(bundle)): p for p in sorted(bundle.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _sharing(trust: str) -> list[str]:
    """ssh options sharing one connection between commands (ControlMaster), with its socket in a folder only
    this user can write to (a socket in a shared /tmp could be planted by another user); none if that fails."""
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"edgeopt-ssh-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
    except OSError:
        return []
    if status.st_uid != os.getuid() or status.st_mode & 0o077 or not stat.S_ISDIR(status.st_mode):
        return []
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={folder}/{trust}-%C", "-o", "ControlPersist=60"]


def _shell_path(path: str) -> str:
    """``path`` quoted for the device's shell, a leading ``~/`` left for it to expand."""
    return '"$HOME"/' + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar holding ``files`` (name -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
