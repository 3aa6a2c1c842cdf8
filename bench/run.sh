#!/usr/bin/env bash
# Benchmark entry point: bash bench/run.sh full|quick|scale
# Installs what the benchmark needs from apt when missing (restic, borg, GNU time, the
# kernel source used as data), then runs bench/bench.py with the project venv's Python.
# See the docstring of bench/bench.py for what is measured and how.
set -euo pipefail

mode="${1:-quick}"
case "$mode" in full|quick|scale) ;; *) echo "usage: $0 full|quick|scale" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (it drops the page cache and may apt-get install)" >&2
    exit 1
fi

missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v xz >/dev/null || missing+=(xz-utils)
if [ "$mode" != scale ] && [ ! -f /usr/src/linux-source-6.1.tar.xz ]; then
    missing+=(linux-source-6.1)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

py=.venv/bin/python
if [ ! -x "$py" ]; then
    echo "bench: $py missing (make install); using python3; btfs steps need .venv/bin/btfs" \
         "or BENCH_BTFS" >&2
    py=python3
fi
# btfs as a user runs it: an installed package carries its bytecode, but this editable
# install only writes it when Python may (not under PYTHONDONTWRITEBYTECODE=1, which then
# recompiles btfs's modules in every btfs command and mount).
"$py" -m compileall -q btfs
exec "$py" -m bench.bench "$mode"
