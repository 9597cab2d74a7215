#!/usr/bin/env bash
# Install everything fiscalflow needs on a fresh Debian machine: Debian packages (OpenSSH for
# the regional issuers' SFTP servers; PostgreSQL only when none answers; Chromium for the web
# console's browser tests, tests/integration/browser), then .venv/ with the
# pinned Python packages (constraints.txt is the lock).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v chromium >/dev/null || need_apt+=(chromium)
if ! (command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q); then
    command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
fi
# The interpreter (PYTHON=... chooses another): the distribution's python3.11 where there is one.
# Debian builds it with PGO and LTO and links it statically, as the image's python:3.11-slim is
# built; a pyenv build without --enable-optimizations (the first python3.11 on these machines' PATH)
# costs the pipeline's Python processes ~9 % more CPU per document (decision 0038).
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3.11 ]; then
    PYTHON=/usr/bin/python3.11
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3.11-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fiscalflow needs Debian packages: ${need_apt[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "installing Debian packages: ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "fiscalflow needs Python 3.11 (found $("$PYTHON" --version))" >&2; exit 1; }
# A .venv made by another interpreter is made again: its packages come back from the lock.
real_exe='import os, sys; print(os.path.realpath(sys._base_executable))'
if [ -x .venv/bin/python ]; then
    made_with=$(.venv/bin/python -c "$real_exe")
    if [ "$made_with" != "$("$PYTHON" -c "$real_exe")" ]; then
        echo "making .venv again with $PYTHON (it was made with $made_with)"
        rm -rf .venv
    fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The product with its dev tools, and the tooling (local stack, demo issuers, demo, bench): a
# distribution of its own, so the product image carries the product only.
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]' -e ./tooling
echo "ready: .venv/bin/fiscalflow"
