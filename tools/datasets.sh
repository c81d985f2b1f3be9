#!/usr/bin/env bash
# Make the offline datasets available: Fashion-MNIST from Debian's package when missing.
# CIFAR-10 (the JPEG copy in ../shared/datasets) and scikit-learn's digits need no set-up.
set -euo pipefail
fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -f "$fmnist" ] || [ -n "${FEASIBLE_FASHION_MNIST:-}" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "feasible: installing Debian's dataset-fashion-mnist (31 MB)" >&2
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }) >&2
else
    echo "feasible: Fashion-MNIST not found at $fmnist." >&2
    echo "  Install it with 'sudo apt-get install dataset-fashion-mnist', or point" >&2
    echo "  FEASIBLE_FASHION_MNIST at a folder holding the four official *-ubyte.gz files." >&2
    echo "  Tests that need it are skipped; the rest runs." >&2
fi
