#!/usr/bin/env bash
# GPU check for a CUDA machine that has a pip PyTorch and g++ but no Go and no
# network: it takes bin/loraft built elsewhere, rebuilds only the C++ shim
# against this machine's libtorch, and runs the trainer benchmark on the GPU
# (bert-base, seq 128, batch 32, bf16) beside the PyTorch reference script.
# Results go to $GPU_CHECK_OUT (default bench/results/). Budget: < 8 minutes.
#
# Needs in the working tree: bin/loraft, deploy/, third_party/gotch/csrc,
# bench/reference/qlora_step.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${GPU_CHECK_OUT:-bench/results}
mkdir -p "$out"
start=$(date +%s)
step() { echo "gpu-check [$(( $(date +%s) - start ))s]: $*"; }

[ -x bin/loraft ] || { echo "gpu-check: bin/loraft missing: build it with 'make build' on a machine with Go and copy bin/" >&2; exit 1; }
[ -f third_party/gotch/csrc/torch_api.cpp ] || { echo "gpu-check: third_party/gotch/csrc missing: run 'make setup' where Go is, then copy it" >&2; exit 1; }
PY=${PYTHON:-python3}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/gpu-nvidia-smi.txt" || true
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tee "$out/gpu-torch.txt"

step "rebuilding the shim against this machine's libtorch"
JOBS=$(nproc) deploy/build-shim.sh --src third_party/gotch/csrc --out lib 2>&1 | tail -n 5
bin/loraft version --json | tee "$out/gpu-version.json"

step "trainer benchmark on cuda (bert-base, seq 128, batch 32, bf16) with the torch reference"
timeout 360 bin/loraft bench trainer --device cuda --compute-dtype bf16 --config base --seq 128 --batch 32 \
  --steps 10 --soak-steps 0 --python "$PY" --reference bench/reference/qlora_step.py \
  --out "$out/trainer-gpu.json" 2>&1 | tail -n 20
step "done: $(ls "$out")"
