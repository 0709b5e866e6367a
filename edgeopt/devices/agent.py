"""The helper edgeopt runs on a remote device, sent as source with every command (nothing is installed there).

Stdlib only and self-contained (Python 3.8+): it runs on the device's own Python, which may have nothing else.
Every command prints one JSON document on stdout; a failure prints ``{"error": ...}`` and exits 3. Paths it
writes are confined to the work directory named on the command line.

Commands (``python - COMMAND ARGS`` with this source as the program, or ``python -c``):
    describe MODULES_JSON     what makes a figure comparable, and which runtime modules import (with versions)
    hashes DIR                sha256 of every file under DIR (relative paths), {} when DIR does not exist
    unpack DIR                a tar stream on stdin extracted into DIR (regular files and folders only)
    bench DIR ARGS_JSON       temperature and throttling around ``run.py --bench`` in DIR; its JSON figures
    detect DIR LIST ARGS_JSON ``run.py --eval`` on the images listed in the file LIST; its JSON lines
    install VENV WHEELS REQS  a venv (made once) with REQS installed from the folder WHEELS only
    remove DIR NAMES_JSON     delete the listed files under DIR
"""

import hashlib
import importlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tarfile
import time

INT8_FLAGS = ("asimddp", "i8mm", "sve", "sve2", "bf16", "asimdhp", "avx2", "avx512f", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_int8", "amx_bf16")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


# ARM's "CPU part" numbers of the cores found on Raspberry Pi-class boards (aarch64 cpuinfo has no model name)
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
             "0xd47": "Cortex-A710", "0xd4d": "Cortex-A715", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720"}


def _cpuinfo():
    """CPU model and the int8-relevant flags from /proc/cpuinfo (x86 'flags', ARM 'Features')."""
    first, flags = {}, set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif value:
            first.setdefault(key, value)
    part = ARM_PARTS.get(first.get("cpu part", "").lower())
    board = first.get("model") if not first.get("model", "0").isdigit() else None  # a Pi's "Model" line
    names = [first.get("model name"), " ".join(n for n in (board, part) if n), first.get("hardware")]
    model = next((n for n in names if n), None)
    return model or platform.processor() or platform.machine(), [f for f in INT8_FLAGS if f in flags]


def _temperatures():
    """Thermal zone temperatures in degrees C (a Pi's SoC is zone 0)."""
    temps = {}
    base = "/sys/class/thermal"
    for zone in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        raw = _read(os.path.join(base, zone, "temp"))
        kind = (_read(os.path.join(base, zone, "type")) or zone).strip()
        if raw and raw.strip().lstrip("-").isdigit():
            temps[kind] = int(raw) / 1000.0
    return temps


def _throttled():
    """``vcgencmd get_throttled`` (Raspberry Pi firmware) as an int, None where the tool is missing."""
    tool = shutil.which("vcgencmd")
    if not tool:
        return None
    try:
        out = subprocess.run([tool, "get_throttled"], capture_output=True, text=True, timeout=10).stdout
        return int(out.strip().split("=")[-1], 16)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _meminfo():
    info = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split():
            info[key] = int(value.split()[0]) // 1024
    return info


def _os_name():
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _module_version(name):
    """The version of an importable module (its distribution's, else ``__version__``), or why it fails."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure (missing, bad wheel, illegal instruction) is data
        return {"ok": False, "error": "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")}
    version = getattr(module, "__version__", None)
    try:
        from importlib import metadata
        version = metadata.version(name.split(".")[0].replace("_", "-")) or version
    except Exception:  # noqa: BLE001 - a module without distribution metadata keeps its __version__
        pass
    return {"ok": True, "version": str(version) if version else None,
            "import_s": round(time.perf_counter() - started, 3)}


def describe(modules):
    model, flags = _cpuinfo()
    mem = _meminfo()
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {"cpu": model, "machine": platform.machine(), "cores": os.cpu_count(), "cpu_flags": flags,
            "governor": governor.strip() if governor else None, "temperature_c": _temperatures(),
            "throttled": _throttled(), "mem_total_mb": mem.get("MemTotal"), "mem_available_mb": mem.get("MemAvailable"),
            "os": _os_name(), "kernel": platform.release(), "python": platform.python_version(),
            "python_bits": struct.calcsize("P") * 8,  # a 32-bit userland on a 64-bit kernel says aarch64 above
            "python_path": sys.executable, "libc": "-".join(platform.libc_ver()),
            "runtimes": {name: _module_version(name) for name in modules}}


def hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[os.path.relpath(path, root)] = digest.hexdigest()
    return out


def _safe_members(tar, root):
    """Regular files and folders whose resolved path stays inside ``root`` (no links, devices, ``..``)."""
    for member in tar:
        target = os.path.realpath(os.path.join(root, member.name))
        inside = target.startswith(root + os.sep) or (member.isdir() and target == root)
        if not (member.isfile() or member.isdir()) or os.path.isabs(member.name) or not inside:
            raise ValueError("refusing archive member %r" % member.name)
        yield member


def unpack(root):
    """Extract stdin's tar into ``root``; each file is written beside its place and renamed into it."""
    root = os.path.realpath(root)
    os.makedirs(root, exist_ok=True)
    names = []
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        for member in _safe_members(tar, root):
            target = os.path.join(root, member.name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            partial = "%s.part-%d" % (target, os.getpid())
            with open(partial, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out)
            os.chmod(partial, 0o755 if member.mode & 0o100 else 0o644)
            os.replace(partial, target)
            names.append(member.name)
    return {"written": names}


def remove(root, names):
    """Delete the files ``names`` (relative) under ``root``: what a bundle folder holds beyond the bundle."""
    root = os.path.realpath(root)
    for name in names:
        target = os.path.realpath(os.path.join(root, name))
        if target.startswith(root + os.sep) and os.path.isfile(target):
            os.remove(target)
    return {"removed": names}


def _limit():
    """Seconds a command may take (edgeopt's command_timeout): what this helper starts is stopped by then."""
    return float(os.environ.get("EDGEOPT_TIMEOUT", "1800"))


def _run_py(root, args):
    # -B: no __pycache__ written into the bundle (every file there must be one the manifest lists)
    proc = subprocess.run([sys.executable, "-B", os.path.join(root, "run.py")] + args, capture_output=True,
                          text=True, cwd=root, env=dict(os.environ, OMP_NUM_THREADS=str(_threads(args))),
                          timeout=_limit())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError("run.py %s failed (exit %d): %s" % (" ".join(args[:1]), proc.returncode,
                                                               tail[-1] if tail else "no output"))
    return proc.stdout


def _threads(args):
    return args[args.index("--threads") + 1] if "--threads" in args else 1


def bench(root, args):
    before, throttled_before = _temperatures(), _throttled()
    figures = json.loads(_run_py(root, ["--bench"] + args).strip().splitlines()[-1])
    after, throttled_after = _temperatures(), _throttled()
    figures.update(temperature_before_c=before, temperature_after_c=after,
                   throttled_before=throttled_before, throttled_after=throttled_after)
    return figures


def detect(root, listing, args):
    with open(listing) as f:
        images = [os.path.join(os.path.dirname(listing), line.strip()) for line in f if line.strip()]
    out = _run_py(root, ["--eval", "--json"] + args + images)
    return {"detections": [json.loads(line) for line in out.splitlines() if line.startswith("{")]}


def install(venv, wheelhouse, requirements, without_deps=()):
    """A venv at ``venv`` (made once) with ``requirements`` installed from ``wheelhouse`` only (no network), then
    ``without_deps`` without the dependencies their wheels declare."""
    python = os.path.join(venv, "bin", "python")
    works = os.path.exists(python) and subprocess.run([python, "-m", "pip", "--version"],
                                                      capture_output=True).returncode == 0
    if not works:  # absent, or half made (e.g. python3-venv missing): made anew, never half-used
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
        if made.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = (made.stderr or made.stdout).strip().splitlines()
            raise RuntimeError("cannot make a venv: %s (on Debian: apt install python3-venv)"
                               % (tail[-1] if tail else made.returncode))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--find-links", wheelhouse]
    for args in (requirements, ["--no-deps"] + list(without_deps) if without_deps else []):
        if not args:
            continue
        proc = subprocess.run(pip + args, capture_output=True, text=True, timeout=_limit())
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError("pip install failed: %s" % (tail[-1] if tail else proc.returncode))
    freeze = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True,
                            text=True).stdout.split()
    return {"python": python, "installed": freeze}


def main(argv):
    command, args = argv[0], [os.path.expanduser(a) if a.startswith("~") else a for a in argv[1:]]
    if command == "describe":
        return describe(json.loads(args[0]))
    if command == "hashes":
        return hashes(args[0]) if os.path.isdir(args[0]) else {}
    if command == "unpack":
        return unpack(args[0])
    if command == "bench":
        return bench(args[0], json.loads(args[1]))
    if command == "detect":
        return detect(args[0], args[1], json.loads(args[2]))
    if command == "install":
        return install(args[0], args[1], json.loads(args[2]), json.loads(args[3]) if len(args) > 3 else [])
    if command == "remove":
        return remove(args[0], json.loads(args[1]))
    raise ValueError("unknown command %r" % command)


if __name__ == "__main__":
    try:
        print(json.dumps(main(sys.argv[1:])))
    except Exception as exc:  # noqa: BLE001 - reported to edgeopt as data, which raises a DeviceError
        print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
        sys.exit(3)
