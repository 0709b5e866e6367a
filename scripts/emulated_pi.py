#!/usr/bin/env python3
"""An emulated arm64 Raspberry Pi to try edgeopt's SSH device flow without a board.

    python3 scripts/emulated_pi.py start [--dir DIR] [--port PORT]
    python3 scripts/emulated_pi.py status [--dir DIR]
    python3 scripts/emulated_pi.py stop [--dir DIR]

``start`` builds (once, then cached) a Debian bookworm arm64 userland like Raspberry Pi OS's with debootstrap,
and starts Debian's OpenSSH server on 127.0.0.1 whose login user (root) lands in that root filesystem through
``ChrootDirectory``. Every program there is an aarch64 binary that the kernel hands to ``qemu-aarch64-static``
(binfmt_misc), so ``ssh ... uname -m`` says ``aarch64`` and ``python3`` is the arm64 Python 3.11. It prints the
path of a device profile (``DIR/state/emulated-pi.yaml``) for edgeopt's ``device`` commands. Timings are not a
Pi's: qemu-user translates every instruction, so it is slower than the host and the board alike.

The CPU is qemu's model of a Pi's core (``--cpu cortex-a76``, a Pi 5's, by default; ``cortex-a72`` for a Pi 4),
set for every session through sshd's ``SetEnv QEMU_CPU``. The chroot's ``/proc/cpuinfo`` is an arm64 one listing
the features that model executes (bound over qemu's, which is the host's x86 file), and its ``/sys`` holds plain
files describing the CPU topology and caches instead of the host's sysfs: arm64 runtimes crash on the host's
(onnxruntime, LiteRT) or without any (OpenVINO). The core count is the host's.

DIR defaults to ``$EDGEOPT_EMULATED_PI_DIR`` or ``~/.cache/edgeopt/emulated-pi`` and holds:
  ``rootfs-<key>.tar``  the cached root filesystem, ``<key>`` a hash of its recipe (debootstrap arguments and
                        ``RECIPE_VERSION``): a later ``start`` on a clean DIR unpacks it instead of rebuilding;
  ``rootfs/``           the unpacked root filesystem (the chroot), complete only if it holds ``MARKER``;
  ``state/``            sshd's throwaway keys, config, pid and log, and the device profile.
``stop`` stops that sshd by its pid and unmounts what ``start`` mounted (``rootfs/proc`` and the cpuinfo bound over
it); it is idempotent.

Host needs (never installed by this script): ``apt-get install -y qemu-user-static binfmt-support debootstrap
openssh-server``, root, and the network to reach the Debian mirror for the first build (~5 min, ~320 MB).

As a module (stdlib only), ``start_sshd`` starts Debian's ``sshd`` (no systemd) on 127.0.0.1 with throwaway host
and user keys and writes a device profile for it; ``stop_sshd`` stops it by its pid. Without ``chroot`` the
"device" is this machine reached over SSH (what the default test run uses).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
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


def _sshd_config(state: Path, port: int, chroot: Path | None, env: dict[str, str] | None = None) -> str:
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {state / 'host_key'}",
             f"PidFile {state / 'sshd.pid'}", f"AuthorizedKeysFile {state / 'user_key.pub'}",
             "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
             "PermitRootLogin prohibit-password", "AllowTcpForwarding no", "X11Forwarding no",
             "PermitUserEnvironment no", "LogLevel ERROR"]
    if chroot is not None:
        lines.append(f"ChrootDirectory {chroot}")
    if env:
        lines.append("SetEnv " + " ".join(f"{key}={value}" for key, value in env.items()))
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
               python: str | None = None, work_dir: str | None = None, emulated: bool = False,
               name: str = "loopback", env: dict[str, str] | None = None) -> dict:
    """Start sshd on 127.0.0.1 with keys in ``state``; returns the device profile (also written to
    ``state/<name>.yaml``). The profile's known_hosts holds the server's key, so host keys are checked. ``env``
    is set in every session (sshd's SetEnv), e.g. QEMU_CPU for the qemu that runs an emulated device's binaries."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server openssh-client")
    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    port = port or free_port()
    user = user or getpass.getuser()
    _keygen(state / "host_key")
    _keygen(state / "user_key")
    (state / "sshd_config").write_text(_sshd_config(state, port, chroot, env))
    host_key = (state / "host_key.pub").read_text().split()
    (state / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = open(state / "sshd.log", "ab")  # noqa: SIM115 - handed to the server process
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(state / "sshd_config")], stdout=log, stderr=log,
                            start_new_session=True)
    (state / "sshd.pid").write_text(f"{proc.pid}\n")
    _wait_listening(port, proc)
    profile = {"name": name, "kind": "ssh", "host": "127.0.0.1", "port": port, "user": user,
               "identity": str(state / "user_key"), "known_hosts": str(state / "known_hosts"),
               **({"python": python} if python else {}),
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
    for child in _children(pid):  # each connection has its own sshd (in its own session): the link drops too
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie counts as gone: once the server that start left behind exits, it is init's
    child, and some inits (a container's) take seconds to reap it."""
    try:
        os.kill(pid, 0)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return fields[0] != "Z"


# ---------------------------------------------------------------------------------------------------------------
# The emulated Pi: host checks, binfmt, the cached arm64 root filesystem, its mounts, and the CLI around them.

APT_HINT = "apt-get install -y qemu-user-static binfmt-support debootstrap openssh-server"
HOST_TOOLS = ("qemu-aarch64-static", "debootstrap", SSHD, "ssh-keygen")
SUITE = "bookworm"  # Raspberry Pi OS 12 is Debian bookworm: same glibc (2.36) and Python (3.11)
MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_ARGS = ("--arch=arm64", "--variant=minbase", "--include=python3,python3-venv,python3-pip", SUITE)
RECIPE_VERSION = 1  # bump when what start puts into the rootfs changes, so old tarballs are not reused
MARKER = ".edgeopt-emulated-pi"  # written into the rootfs last: its absence means an unfinished rootfs
WORK_DIR = "/root/edgeopt"  # edgeopt's work dir on the device, a path inside the chroot
PROFILE_NAME = "emulated-pi"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
OWN_BINFMT_ENTRY = "edgeopt-aarch64"
# The aarch64 ELF header as qemu's own binfmt registration matches it (ELF64, little-endian, e_machine 183).
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
# The device nodes a non-interactive ChrootDirectory session uses (sshd opens none itself inside the chroot);
# debootstrap makes them, and start remakes any that a tarball made without root lost.
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


class EmulatedPiError(RuntimeError):
    """A condition start cannot fix by itself; its message says what to do."""


def default_dir() -> Path:
    """Where the emulated Pi lives unless --dir says otherwise."""
    env = os.environ.get("EDGEOPT_EMULATED_PI_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeopt" / "emulated-pi"


def recipe_key() -> str:
    """A short hash of everything that decides the rootfs's content: the cache key of its tarball."""
    recipe = {"debootstrap": list(DEBOOTSTRAP_ARGS), "mirror": MIRROR, "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def check_host() -> None:
    """Refuse early, with the apt command to run, when a host tool is missing or we are not root."""
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None and not Path(tool).exists()]
    if missing:
        raise EmulatedPiError(f"missing {', '.join(missing)}: run `{APT_HINT}` (as root)")
    if os.geteuid() != 0:
        raise EmulatedPiError("run as root: debootstrap, chroot, mount and sshd's ChrootDirectory need it")


# --- binfmt_misc ----------------------------------------------------------------------------------------------

def _binfmt_entries() -> dict[str, dict[str, str]]:
    """The enabled binfmt_misc entries that match aarch64 ELF files: name -> {interpreter, flags}."""
    entries = {}
    for name in (BINFMT_ENTRY, OWN_BINFMT_ENTRY):
        try:
            lines = (BINFMT / name).read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
        if lines and lines[0] == "enabled":
            entries[name] = {"interpreter": fields.get("interpreter", ""), "flags": fields.get("flags:", "")}
    return entries


def _usable_in_chroot(entry: dict[str, str], rootfs: Path | None) -> bool:
    """With F the kernel opened the interpreter when it was registered, so it works inside any chroot; without F
    the kernel opens the interpreter path at exec time, inside the chroot, where it must exist."""
    if "F" in entry["flags"]:
        return True
    return rootfs is not None and (rootfs / entry["interpreter"].lstrip("/")).exists()


def ensure_binfmt(rootfs: Path | None = None) -> str:
    """Make the kernel run aarch64 ELF binaries with qemu inside the chroot; returns how it does (for status).
    Tries, in order: the mounted binfmt_misc, binfmt-support's entry, and our own registration with F."""
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], "mount binfmt_misc")
    if BINFMT_ENTRY not in _binfmt_entries() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", BINFMT_ENTRY], capture_output=True)
    for name, entry in _binfmt_entries().items():
        if _usable_in_chroot(entry, rootfs):
            return f"{name}: {entry['interpreter']} flags {entry['flags'] or '-'}"
    # An entry without F is unusable in a chroot that lacks its interpreter; the kernel tries the most recently
    # registered entry first, so ours (with F, the static qemu) takes over without removing binfmt-support's.
    qemu = shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static"
    rule = f":{OWN_BINFMT_ENTRY}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{qemu}:F"
    try:
        (BINFMT / "register").write_text(rule)
    except OSError as exc:
        raise EmulatedPiError(f"cannot register qemu-aarch64 with binfmt_misc ({exc}); as root run "
                              f"`update-binfmts --enable {BINFMT_ENTRY}` or `echo '{rule}' > {BINFMT}/register`") \
            from exc
    entry = _binfmt_entries()[OWN_BINFMT_ENTRY]
    return f"{OWN_BINFMT_ENTRY}: {entry['interpreter']} flags {entry['flags']}"


# --- mounts ---------------------------------------------------------------------------------------------------

def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    root = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> list[Path]:
    """Unmount everything mounted below ``path`` (a lazy unmount if a process still holds it); returns them."""
    points = _mounts_under(path) if path.exists() else []
    for point in points:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            _run(["umount", "--lazy", str(point)], f"unmount {point}")
    return points


def remove_tree(path: Path) -> None:
    """Delete a (possibly half-built) rootfs, never following a mount into the host's /proc or /dev."""
    unmount_all(path)
    if path.exists() and _mounts_under(path):
        raise EmulatedPiError(f"{path} still has mounts below it: {_mounts_under(path)}; unmount them first")
    if path.exists():
        _run(["rm", "-rf", "--one-file-system", str(path)], f"remove {path}")


# --- the root filesystem --------------------------------------------------------------------------------------

def rootfs_complete(rootfs: Path, key: str) -> bool:
    """Whether ``rootfs`` is a finished build of this recipe (the marker is the last thing written)."""
    try:
        return (rootfs / MARKER).read_text().split()[0] == key
    except (OSError, IndexError):
        return False


def build_rootfs(dest: Path, key: str, log: Path) -> None:
    """debootstrap a fresh arm64 rootfs into ``dest`` (a temporary directory) and mark it complete."""
    dest.mkdir(parents=True)
    cmd = ["debootstrap", *DEBOOTSTRAP_ARGS, str(dest), MIRROR]
    print(f"building the arm64 rootfs (about 5 min): {' '.join(cmd)}; log {log}", flush=True)
    with open(log, "wb") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    # debootstrap mounts proc (and more) in the target while it configures packages; a failure can leave them.
    unmount_all(dest)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise EmulatedPiError(f"debootstrap failed ({result.returncode}): {' | '.join(tail)}; full log {log}")
    subprocess.run(["chroot", str(dest), "apt-get", "clean"], capture_output=True)  # ~30 MB of .debs
    (dest / MARKER).write_text(f"{key}\n{' '.join(cmd)}\n")


def write_tarball(rootfs: Path, tarball: Path) -> None:
    """Cache ``rootfs`` as ``tarball``: written under a temporary name and renamed, so a tarball that exists is
    whole. Uncompressed, because unpacking is what a cached start waits for."""
    tmp = tarball.with_name(tarball.name + f".tmp{os.getpid()}")
    try:
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "--one-file-system", "-cf", str(tmp), "."],
             f"write {tarball}")
        os.replace(tmp, tarball)
    finally:
        tmp.unlink(missing_ok=True)


def unpack_tarball(tarball: Path, dest: Path) -> None:
    """Unpack a cached rootfs into ``dest`` (a temporary directory), owners and device nodes kept."""
    dest.mkdir(parents=True)
    _run(["tar", "-C", str(dest), "--numeric-owner", "-xpf", str(tarball)], f"unpack {tarball}")


def ensure_rootfs(base: Path) -> Path:
    """The finished rootfs under ``base``: kept if complete, else unpacked from the cached tarball, else built
    (and cached). Work happens in ``base/rootfs.partial``, renamed to ``base/rootfs`` only when complete."""
    key = recipe_key()
    rootfs, partial, tarball = base / "rootfs", base / "rootfs.partial", base / f"rootfs-{key}.tar"
    if rootfs_complete(rootfs, key):
        return rootfs
    remove_tree(partial)  # an interrupted earlier start
    if tarball.exists():
        began = time.monotonic()
        unpack_tarball(tarball, partial)
        print(f"unpacked the cached rootfs {tarball.name} in {time.monotonic() - began:.1f} s", flush=True)
    else:
        build_rootfs(partial, key, base / "debootstrap.log")
        write_tarball(partial, tarball)
    if not rootfs_complete(partial, key):
        raise EmulatedPiError(f"{partial} lacks {MARKER} after unpacking; delete {tarball} and start again")
    remove_tree(rootfs)  # incomplete or of an older recipe
    partial.rename(rootfs)
    return rootfs


# --- what the chrooted session needs -------------------------------------------------------------------------

def check_chroot_path(rootfs: Path) -> None:
    """sshd refuses a ChrootDirectory unless it and every parent is root-owned and writable by root alone."""
    for part in [rootfs, *rootfs.parents]:
        info = part.stat()
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise EmulatedPiError(f"sshd's ChrootDirectory needs {part} root-owned and not group/other-writable "
                                  f"(it is uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); "
                                  "choose a --dir whose parents are (not under /tmp)")


def prepare_rootfs(rootfs: Path) -> None:
    """Mount /proc and make /dev and the work dir (/sys gets plain files: see ``sysfs_files``)."""
    rootfs.chmod(0o755)
    for name, (major, minor) in DEV_NODES.items():
        node = rootfs / "dev" / name
        if not node.is_char_device():
            node.unlink(missing_ok=True)
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            node.chmod(0o666)
    for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                         "stderr": "/proc/self/fd/2"}.items():
        if not (rootfs / "dev" / name).is_symlink():
            (rootfs / "dev" / name).symlink_to(target)
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    if proc not in _mounts_under(proc):
        # a fresh proc instance (not a bind of the host's, which would carry its submounts along)
        _run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(proc)], f"mount proc on {proc}")
    (rootfs / WORK_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)


# --- the emulated CPU: qemu's model, and the /proc/cpuinfo and /sys files that describe it -----------------------

# Which Pi each qemu CPU model stands for: MIDR (implementer 0x41 Arm, variant, part, revision as on the board),
# the board's top clock, and the caches of one core / the cluster (size, level, type, shared by all cores?).
CPU_MODELS: dict[str, dict] = {
    "cortex-a76": {"board": "Raspberry Pi 5", "midr": 0x414FD0B1, "khz": 2400000,
                   "caches": [(64, 1, "Data", False), (64, 1, "Instruction", False), (512, 2, "Unified", False),
                              (2048, 3, "Unified", True)]},
    "cortex-a72": {"board": "Raspberry Pi 4", "midr": 0x410FD083, "khz": 1800000,
                   "caches": [(32, 1, "Data", False), (48, 1, "Instruction", False), (1024, 2, "Unified", True)]},
}
DEFAULT_CPU = "cortex-a76"
# The kernel's names for the AT_HWCAP and AT_HWCAP2 bits (arch/arm64/kernel/cpuinfo.c), in bit order.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
               "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 "
                "sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16").split()


def cpu_features(rootfs: Path, cpu: str) -> list[str]:
    """The features qemu's ``cpu`` model really executes, as the kernel would list them: its AT_HWCAP bits, read
    with glibc's LD_SHOW_AUXV from an aarch64 program in the rootfs (set by the aarch64 ``env``, so the host's
    ``chroot`` does not print its own x86 auxv)."""
    out = subprocess.run(["chroot", str(rootfs), "/usr/bin/env", "LD_SHOW_AUXV=1", "/bin/true"],
                         env={**os.environ, "QEMU_CPU": cpu}, capture_output=True, text=True, check=True).stdout
    auxv = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    hwcap, hwcap2 = (int(auxv.get(key, "0").strip(), 16) for key in ("AT_HWCAP", "AT_HWCAP2"))
    return ([name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
            + [name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1])


def cpuinfo_text(cpu: str, features: list[str], ncpu: int) -> str:
    """An arm64 kernel's /proc/cpuinfo for ``ncpu`` cores of ``cpu``. qemu 7.2's user mode passes the host's
    (x86) file through, which arm64 runtimes misparse (cpuinfo errors) and edgeopt cannot read flags from."""
    midr = CPU_MODELS[cpu]["midr"]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{midr >> 24:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{midr >> 20 & 0xF:x}\nCPU part\t: 0x{midr >> 4 & 0xFFF:03x}\n"
             f"CPU revision\t: {midr & 0xF}\n\n")
    return "".join(f"processor\t: {n}\n{block}" for n in range(ncpu))


def sysfs_files(cpu: str, ncpu: int) -> dict[str, str]:
    """The sysfs CPU files arm64 runtimes read, as plain files (``sys/...`` relative paths -> content). The real
    sysfs is not mounted: with the host's, onnxruntime and LiteRT segfault under qemu (their cpuinfo library
    reads x86 topology); with none, OpenVINO segfaults in compile_model (hwloc finds no topology) and onnxruntime
    warns that cpuinfo failed."""
    model, last, everyone = CPU_MODELS[cpu], ncpu - 1, f"{(1 << ncpu) - 1:x}"
    root = "sys/devices/system/cpu"
    files = {f"{root}/{name}": f"0-{last}" for name in ("possible", "present", "online")}
    files[f"{root}/kernel_max"] = str(last)
    for n in range(ncpu):
        cpu_dir = f"{root}/cpu{n}"
        own = f"{1 << n:x}"
        files |= {f"{cpu_dir}/online": "1", f"{cpu_dir}/regs/identification/midr_el1": f"0x{model['midr']:016x}",
                  f"{cpu_dir}/cpufreq/cpuinfo_max_freq": str(model["khz"]),
                  f"{cpu_dir}/topology/physical_package_id": "0", f"{cpu_dir}/topology/core_id": str(n),
                  f"{cpu_dir}/topology/cluster_id": "0"}
        for name, mask, listed in (("thread_siblings", own, str(n)), ("core_cpus", own, str(n)),
                                   ("core_siblings", everyone, f"0-{last}"), ("package_cpus", everyone, f"0-{last}"),
                                   ("cluster_cpus", everyone, f"0-{last}")):
            files[f"{cpu_dir}/topology/{name}"] = mask
            files[f"{cpu_dir}/topology/{name}_list"] = listed
        for index, (kib, level, kind, shared) in enumerate(model["caches"]):
            cache = f"{cpu_dir}/cache/index{index}"
            files |= {f"{cache}/size": f"{kib}K", f"{cache}/level": str(level), f"{cache}/type": kind,
                      f"{cache}/coherency_line_size": "64", f"{cache}/shared_cpu_map": everyone if shared else own,
                      f"{cache}/shared_cpu_list": f"0-{last}" if shared else str(n)}
    return files


def describe_cpu(rootfs: Path, state: Path, cpu: str) -> list[str]:
    """Write the sysfs files into the rootfs and bind /proc/cpuinfo (kept in ``state``) over the rootfs's
    proc; returns the features. The core count is this host's: qemu runs each guest thread on a host core."""
    ncpu = len(os.sched_getaffinity(0))
    features = cpu_features(rootfs, cpu)
    sys_dir = rootfs / "sys"
    if sys_dir in _mounts_under(sys_dir):
        raise EmulatedPiError(f"{sys_dir} is a mount point; unmount it (the emulated Pi writes plain files there)")
    shutil.rmtree(sys_dir / "devices", ignore_errors=True)  # a previous start's, maybe for another cpu model
    for rel, content in sysfs_files(cpu, ncpu).items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(content + "\n")
    (state / "cpuinfo").write_text(cpuinfo_text(cpu, features, ncpu))
    target = rootfs / "proc" / "cpuinfo"
    if target not in _mounts_under(target):
        _run(["mount", "--bind", str(state / "cpuinfo"), str(target)], "bind the emulated /proc/cpuinfo")
        _run(["mount", "-o", "remount,bind,ro", str(target)], "make the emulated /proc/cpuinfo read-only")
    return features


# --- sshd and the profile -------------------------------------------------------------------------------------

def sshd_running(state: Path) -> int | None:
    """The pid of the sshd that ``start`` left in ``state``, if that process still runs."""
    try:
        pid = int((state / "sshd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def previous_port(state: Path) -> int | None:
    """The port of the last profile, so a restarted emulated Pi keeps its address when that port is free."""
    try:
        text = (state / f"{PROFILE_NAME}.yaml").read_text()
        port = int(next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("port:")))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        return port
    except (OSError, ValueError, StopIteration):
        return None


def cmd_start(base: Path, port: int | None, cpu: str = DEFAULT_CPU) -> int:
    """Build or unpack the rootfs, prepare it, start sshd chrooted into it; prints the profile's path."""
    check_host()
    base.mkdir(parents=True, exist_ok=True)
    state = base / "state"
    with _locked(base):
        if pid := sshd_running(state):
            print(f"already running (sshd pid {pid}); profile {state / (PROFILE_NAME + '.yaml')}")
            return 0
        check_chroot_path(base)  # before a 5-minute build that sshd would then refuse
        ensure_binfmt()  # debootstrap's second stage already runs arm64 binaries in its chroot
        rootfs = ensure_rootfs(base)
        check_chroot_path(rootfs)
        binfmt = ensure_binfmt(rootfs)
        state.mkdir(mode=0o700, exist_ok=True)
        try:
            prepare_rootfs(rootfs)
            features = describe_cpu(rootfs, state, cpu)
            # QEMU_CPU reaches every program of the session: qemu then executes only what that core has
            # (its default, "max", would offer SVE and SME, which no Pi has).
            start_sshd(state, port=port or previous_port(state), chroot=rootfs, user="root",
                       work_dir=WORK_DIR, emulated=True, name=PROFILE_NAME, env={"QEMU_CPU": cpu})
            _smoke_test(state)
        except BaseException:
            stop_sshd(state)
            unmount_all(rootfs)
            raise
    profile = state / f"{PROFILE_NAME}.yaml"
    print(f"emulated arm64 Pi up: {cpu} ({CPU_MODELS[cpu]['board']}'s core) with {' '.join(features)}; {binfmt}")
    print(profile)
    return 0


def _smoke_test(state: Path) -> None:
    """One ssh login that runs an aarch64 binary, so a start that would fail the first device command says so."""
    profile = dict(line.split(": ", 1) for line in (state / f"{PROFILE_NAME}.yaml").read_text().splitlines())
    cmd = ["ssh", "-p", profile["port"], "-i", json.loads(profile["identity"]), "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={json.loads(profile['known_hosts'])}", "-o", "StrictHostKeyChecking=yes",
           "root@127.0.0.1", "uname -m"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.stdout.strip() != "aarch64":
        raise EmulatedPiError(f"ssh into the emulated Pi said {result.stdout.strip()!r} "
                              f"(exit {result.returncode}): {result.stderr.strip()}; see {state / 'sshd.log'}")


def cmd_stop(base: Path) -> int:
    """Stop sshd and unmount what start mounted; fine when nothing runs."""
    state = base / "state"
    with _locked(base):
        pid = sshd_running(state)
        stop_sshd(state)
        unmounted = unmount_all(base / "rootfs")
    print(f"stopped{f' sshd pid {pid}' if pid else ' (sshd was not running)'}"
          f"{'; unmounted ' + ', '.join(map(str, unmounted)) if unmounted else ''}")
    return 0


def cmd_status(base: Path) -> int:
    """Print what exists and what runs; exit 0 if the emulated Pi is up, 3 if not."""
    state, rootfs, key = base / "state", base / "rootfs", recipe_key()
    tarball = base / f"rootfs-{key}.tar"
    pid = sshd_running(state)
    profile = state / f"{PROFILE_NAME}.yaml"
    entries = _binfmt_entries() if BINFMT.exists() else {}
    print(f"dir:     {base}")
    print(f"tarball: {tarball}" + (f" ({tarball.stat().st_size / 1e6:.0f} MB)" if tarball.exists() else " (none)"))
    print(f"rootfs:  {rootfs} ({'complete' if rootfs_complete(rootfs, key) else 'absent or incomplete'})")
    print(f"mounts:  {', '.join(map(str, _mounts_under(rootfs))) or 'none'}")
    binfmt = "; ".join(f"{name} {entry['interpreter']} flags {entry['flags']}" for name, entry in entries.items())
    print(f"binfmt:  {binfmt or 'none'}")
    print(f"sshd:    {f'running, pid {pid}' if pid else 'stopped'}")
    cpu = next((line.split("=", 1)[1] for line in _lines(state / "sshd_config") if "QEMU_CPU=" in line), "-")
    print(f"cpu:     {cpu.split()[0]}")
    print(f"profile: {profile if profile.exists() else '(none)'}")
    return 0 if pid else 3


# --- small helpers --------------------------------------------------------------------------------------------

def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise EmulatedPiError(f"cannot {what}: {' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()}")


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """One start or stop at a time per DIR."""
    with open(base / ".lock", "a") as handle:  # noqa: SIM117 - the lock lives as long as the file is open
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1].split("\n\nAs a module")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dir_help = "where the rootfs, its cached tarball and sshd's state live (default: $EDGEOPT_EMULATED_PI_DIR or " \
               "~/.cache/edgeopt/emulated-pi)"
    start = sub.add_parser("start", help="build or unpack the arm64 rootfs and start sshd chrooted into it")
    start.add_argument("--dir", type=Path, default=None, help=dir_help)
    start.add_argument("--port", type=int, default=None, help="sshd's port on 127.0.0.1 (default: the last one "
                                                              "if free, else any free port)")
    start.add_argument("--cpu", choices=sorted(CPU_MODELS), default=DEFAULT_CPU,
                       help="qemu's CPU model: cortex-a76 as in a Raspberry Pi 5 (default), cortex-a72 as in a Pi 4")
    for name, text in (("stop", "stop sshd and unmount the rootfs's /proc"), ("status", "show what runs")):
        sub.add_parser(name, help=text).add_argument("--dir", type=Path, default=None, help=dir_help)
    args = parser.parse_args(argv)
    base = (args.dir or default_dir()).expanduser().resolve()
    try:
        if args.command == "start":
            return cmd_start(base, args.port, args.cpu)
        return cmd_stop(base) if args.command == "stop" else cmd_status(base)
    except EmulatedPiError as exc:
        print(f"emulated_pi: {exc}", file=sys.stderr)
        return 1


__all__ = ["free_port", "start_sshd", "stop_sshd", "main"]


if __name__ == "__main__":
    sys.exit(main())
