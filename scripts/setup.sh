#!/usr/bin/env bash
# Install what the project needs to build and test, from Debian 12 packages.
# Idempotent: does nothing (and needs no root) when everything is installed.
set -euo pipefail

PKGS=(
  gcc pkg-config meson ninja-build
  libjansson-dev
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools zlib1g-dev libdeflate-dev  # the checkpoint checksums (CRC-32)
  python3 python3-numpy python3-h5py
  python3-venv  # scripts/lm-eval/setup.sh: lm-evaluation-harness from PyPI
  munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins  # tests/slurm; srun --mpi=pmix is in basic-plugins
  sentencepiece python3-sentencepiece
  clang libclang-rt-dev libomp-dev  # the fuzz targets and the clang build in scripts/test.sh
  libsimde-dev  # tests/unit: the AVX-512 kernels on any CPU (SIMDe)
  cppcheck  # scripts/test.sh: static analysis of src, mpi, partition, checkpoints
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
