#!/usr/bin/env bash
# Make sure the pinned virtual environment exists, then print its path on stdout.
#
# The environment lives outside the clone, keyed by the hash of requirements.lock and the
# Python version, so another clone or a second run reuses it and starts in seconds. A marker
# file is written only when the install has completed: an interrupted install is rebuilt,
# never used. Override the location with FEASIBLE_VENV_CACHE, the interpreter with
# FEASIBLE_PYTHON.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$root/requirements.lock"
py=${FEASIBLE_PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
key=$( (cat "$lock"; "$py" -c 'import sys; print(sys.version_info[:2])') | sha256sum | cut -c1-16)
cache=${FEASIBLE_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/feasible}
venv="$cache/venv-$key"
mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
flock 9  # two builds at once wait for each other
if [ ! -f "$venv/.complete" ]; then
    echo "feasible: building the pinned environment in $venv (about 2 minutes, once)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    # (this machine's pip configuration names local indexes that are not all there: drop that noise)
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "feasible: pip install failed" >&2; exit 1; }
    touch "$venv/.complete"
fi
echo "$venv"
