#!/bin/sh
# Make sure Fashion-MNIST is on disk: install Debian's dataset-fashion-mnist when it is missing.
set -eu
DATA_DIR="${DATA_DIR:-/usr/share/datasets/fashion-mnist}"
if [ -n "${PRUNEKIT_DATA:-}" ] && [ -f "${PRUNEKIT_DATA}/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DATA_DIR/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found in $DATA_DIR: installing Debian's dataset-fashion-mnist package."
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; }; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
  exit 0
fi
cat >&2 <<MSG
error: Fashion-MNIST is missing from $DATA_DIR and apt-get is not available (or not as root).
  Fix: install the Debian package 'dataset-fashion-mnist', or download the four IDX files
  (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
  t10k-labels-idx1-ubyte.gz) into a folder and run with PRUNEKIT_DATA=/that/folder
  (or pass --data-dir /that/folder to the prunekit commands).
MSG
exit 1
