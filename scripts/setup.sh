#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with the CPU build of torch and edgeopt.
# Installing torch==2.13.0 first matters: it is the local CPU wheel, and it satisfies edgeopt's torch range,
# so pip never fetches a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${EDGEOPT_EXTRAS:-all,dev}"
# the device tests talk to a real OpenSSH server on loopback (Debian's packages; installed once, as root)
if { [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client >/dev/null; }
fi
# the sweep report's test renders it in a real headless browser (Debian's chromium; installed once, as root)
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || true
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# nothing to do when this environment was set up from the same pyproject.toml, extras and script, and still
# imports edgeopt: a second run (every demo.sh and test.sh calls this) is quiet and takes a second
STAMP=.venv/.edgeopt-setup
WANT="$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1) ${EXTRAS} $(python -c 'import sys; print(sys.version)')"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && python -c "import edgeopt" 2>/dev/null; then
    exit 0
fi
rm -f "$STAMP"
PIP=(python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"
# scripts/constraints.txt pins the versions measured together here: without it, a clean machine's resolver gave up
# ("resolution-too-deep") on the joint tree of every extra
"${PIP[@]}" -c scripts/constraints.txt -e ".[${EXTRAS}]"
printf '%s' "$WANT" > "$STAMP"
