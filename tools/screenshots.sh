#!/usr/bin/env bash
# Screenshot every rendered page of the book in headless Chromium, into _build/screenshots/.
# Installs Debian's chromium when missing and the user is root. Usage: tools/screenshots.sh [page ...]
# WIDTH (default 1280) and HEIGHT (default 4000) set the viewport; a width other than 1280 is in the
# file name (intro-400.png). Chromium makes no window narrower than 500 px: narrower pages are shot
# in a frame of that width, at the top left of a 500 px window.
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
width=${WIDTH:-1280}; height=${HEIGHT:-4000}
for page in "${pages[@]}"; do
    name=$(basename "$page" .html); [ "$width" = 1280 ] || name="$name-$width"
    profile=$(mktemp -d)
    url="file://$html/$page"
    if [ "$width" -lt 500 ]; then
        printf '<!DOCTYPE html><body style="margin:0"><iframe src="%s" style="border:0;width:%spx;height:%spx"></iframe></body>' \
            "$url" "$width" "$height" > "$profile/frame.html"
        url="file://$profile/frame.html"
    fi
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=$((width < 500 ? 500 : width)),"$height" \
        --virtual-time-budget=8000 --screenshot="$out/$name.png" "$url" >/dev/null 2>&1 || true
    rm -rf "$profile"
    echo "$out/$name.png"
done
