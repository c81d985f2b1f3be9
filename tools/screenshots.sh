#!/usr/bin/env bash
# Screenshot every rendered page of the book in headless Chromium, into _build/screenshots/.
# Installs Debian's chromium when missing and the user is root. Usage: tools/screenshots.sh [page ...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
html="$root/_build/html"
[ -f "$html/index.html" ] || { echo "no rendered book in $html: run 'make book' first" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
    else echo "install chromium (apt-get install chromium) to take screenshots" >&2; exit 1; fi
fi
out="$root/_build/screenshots"; mkdir -p "$out"
pages=("$@"); [ ${#pages[@]} -gt 0 ] || mapfile -t pages < <(cd "$html" && ls book/*.html)
for page in "${pages[@]}"; do
    name=$(basename "$page" .html)
    profile=$(mktemp -d)
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=1280,"${HEIGHT:-4000}" \
        --virtual-time-budget=8000 --screenshot="$out/$name.png" "file://$html/$page" >/dev/null 2>&1 || true
    rm -rf "$profile"
    echo "$out/$name.png"
done
