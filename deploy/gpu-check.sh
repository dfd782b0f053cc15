#!/usr/bin/env bash
# GPU check for a CUDA machine that has a pip PyTorch and g++ but no Go and no
# network: it takes bin/loraft built elsewhere, rebuilds only the C++ shim
# against this machine's libtorch, and runs the trainer benchmark on the GPU
# (bert-base, seq 128, batch 32, bf16: NF4, NF4 with --grad-checkpoint, fp32
# base) beside the PyTorch reference script (explicit casts and autocast),
# one epoch with bf16, --grad-checkpoint and length bucketing together, the
# NF4 dequantization cost and the fp32/bf16 trainer benchmark on the host CPU,
# and the ring all-reduce benchmark.
# Results go to $GPU_CHECK_OUT (default bench/results/). Budget: < 10 minutes.
#
# It then makes the HF golden vectors of issue #16 (deploy/hf-golden.py, with
# transformers and peft) in $GPU_CHECK_OUT/hf-golden/: BertTokenizer ids,
# a tiny random BertForSequenceClassification saved by save_pretrained with
# its logits, a loraft adapter trained on that base (bin/loraft train, fp32,
# on the CPU) and PEFT's logits with it. Each of those steps is bounded by
# timeout and only reported when it fails: the rest of the check goes on.
# Copy them into the repository as trainer/model/hub/testdata/README.md says.
#
# Needs in the working tree: bin/loraft, deploy/, third_party/gotch/csrc,
# bench/reference/qlora_step.py, shard/wordpiece/vocab/bert-base-uncased.txt,
# shard/wordpiece/testdata/golden.json, experiments/data/demo.csv.
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
  --steps 10 --rounds 1 --soak-steps 0 --python "$PY" --reference bench/reference/qlora_step.py \
  --out "$out/trainer-gpu.json" 2>&1 | tail -n 20

step "one epoch on cuda with all of issue #15's features: bf16, --grad-checkpoint, length bucketing vs padded"
timeout 240 bin/loraft bench epoch --device cuda --compute-dtype bf16 --grad-checkpoint --config base \
  --data "${EPOCH_DATA:-experiments/data/demo.csv}" --batch 32 --reps 1 --out "$out/bucketing-gpu.json" 2>&1 | tail -n 5 ||
  echo "gpu-check: bench epoch on cuda FAILED (rc $?)" >&2

# The host CPU of such a machine may have native bf16 (AVX512-BF16 or AMX),
# which issue #15's CPU bf16 goals need and the development machines lack;
# `auto` runs bf16 only where a probe matmul shows it pays (else a bf16 step
# would take minutes and eat the budget).
step "host CPU: NF4 dequantization cost and the bf16 trainer benchmark (bert-base, seq 128, batch 8)"
{ lscpu 2>/dev/null | grep '^Model name'; echo "bf16 flags: $(grep -o -w -E 'avx512_bf16|amx_bf16|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"; } | tee "$out/gpu-host-cpu.txt" || true
timeout 90 bin/loraft bench dequant --out "$out/dequant-host.json" 2>&1 | tail -n 3 ||
  echo "gpu-check: bench dequant FAILED (rc $?)" >&2
timeout 240 bin/loraft bench trainer --device cpu --compute-dtype fp32,auto --config base --seq 128 --batch 8 \
  --steps 3 --rounds 1 --soak-steps 0 --python "$PY" --reference bench/reference/qlora_step.py \
  --out "$out/trainer-host-cpu.json" 2>&1 | tail -n 5 ||
  echo "gpu-check: bench trainer on the host CPU FAILED (rc $?)" >&2

step "ring all-reduce benchmark (ranks as processes, a core each on this machine)"
timeout 180 bin/loraft bench allreduce --ranks 2,4,8 --trainer-json "$out/trainer-gpu.json" --out "$out/allreduce-gpu.json" 2>&1 | tail -n 5 ||
  echo "gpu-check: bench allreduce FAILED (rc $?)" >&2

# The HF golden vectors: a failure here is reported, and the check goes on.
hf="$out/hf-golden"
rm -rf "$hf" && mkdir -p "$hf"
step "HF golden vectors: tokenizer ids and the tiny BERT (deploy/hf-golden.py)"
if timeout 120 "$PY" deploy/hf-golden.py "$hf" >"$hf/log.txt" 2>&1; then
  tail -n 5 "$hf/log.txt"
  step "HF golden vectors: a loraft adapter on the tiny BERT (fp32 base, so PEFT's dense base matches)"
  if timeout 150 bin/loraft train --data experiments/data/demo.csv --base "$hf/tiny-bert" --quant fp32 \
      --epochs 1 --no-calibrate --out "$hf/loraft-adapter" >>"$hf/log.txt" 2>&1; then
    step "HF golden vectors: PEFT's logits with the loraft adapter"
    timeout 90 "$PY" deploy/hf-golden.py "$hf" --skip-base --adapter "$hf/loraft-adapter" >>"$hf/log.txt" 2>&1 ||
      echo "gpu-check: hf-golden --adapter FAILED (rc $?), see $hf/log.txt" >&2
  else
    echo "gpu-check: loraft train on the tiny BERT FAILED (rc $?), see $hf/log.txt" >&2
  fi
else
  echo "gpu-check: hf-golden.py FAILED (rc $?), see $hf/log.txt" >&2
fi
tail -n 5 "$hf/log.txt" || true
step "done: $(ls "$out")"
