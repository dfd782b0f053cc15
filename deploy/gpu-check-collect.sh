#!/usr/bin/env bash
# Puts what `make gpu-check` wrote (its GPU_CHECK_OUT, as the device tool
# brings it back) where the repository keeps it, so that the session that
# ran it spends no time sorting files:
#   trainer-gpu.json, bucketing-gpu.json, allreduce-gpu.json, dequant-gpu.json,
#   trainer-host-cpu.json, dequant-host.json, gpu-*.txt  -> bench/results/
#   logs/                                                -> bench/results/gpu-logs/
#   hf-golden/tokenizer.json     -> shard/wordpiece/testdata/hf-golden/
#   hf-golden/tiny-bert/, peft/  -> trainer/model/hub/testdata/hf-golden/
# (hf-golden/loraft-adapter/ is not kept: peft/adapter/ is the same adapter.)
# Then run the tests experiments/gpu.md names and record the figures there.
#
# Usage: deploy/gpu-check-collect.sh DIR   (DIR: the run's files_at folder)
set -euo pipefail
src=${1:?usage: deploy/gpu-check-collect.sh DIR (the folder gpu-check wrote)}
[ -d "$src" ] || { echo "gpu-check-collect: $src is not a directory" >&2; exit 1; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."

copied=0
put() { # put FROM TO: copy a file or a directory's contents, replacing TO
  local from=$1 to=$2
  [ -e "$from" ] || { echo "gpu-check-collect: $from: not in this run, skipped"; return 0; }
  rm -rf "$to"
  mkdir -p "$(dirname "$to")"
  cp -R "$from" "$to"
  chmod -R u+w "$to" # the device tool's files are read-only
  echo "gpu-check-collect: $from -> $to"
  copied=$((copied + 1))
}

for f in trainer-gpu.json bucketing-gpu.json allreduce-gpu.json dequant-gpu.json trainer-host-cpu.json dequant-host.json \
  gpu-nvidia-smi.txt gpu-torch.txt gpu-version.json gpu-host-cpu.txt; do
  put "$src/$f" "bench/results/$f"
done
put "$src/logs" bench/results/gpu-logs
put "$src/hf-golden/tokenizer.json" shard/wordpiece/testdata/hf-golden/tokenizer.json
put "$src/hf-golden/tiny-bert" trainer/model/hub/testdata/hf-golden/tiny-bert
put "$src/hf-golden/peft" trainer/model/hub/testdata/hf-golden/peft
(( copied > 0 )) || { echo "gpu-check-collect: nothing of a gpu-check run in $src" >&2; exit 1; }
echo "gpu-check-collect: $copied placed; now: go test -count=1 -run 'TestHF|TestPEFT' ./shard/wordpiece/ ./trainer/model/hub/"
