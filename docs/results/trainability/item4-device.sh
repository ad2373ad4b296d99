#!/usr/bin/env bash
# Issue 11, items 4 and 8 in one call of the device machine (one NVIDIA H200 and 16 CPU cores),
# run from the repository root there with the Brown corpus carried in .devdata/brown:
#   item 4: paper-ptb-egru and paper-ptb-lstm, seeds 1 and 2, trained on the host's CPU (4 threads
#           a run, 16 in all), each with --max-minutes; the EGRU's activity measured on valid after;
#   item 8: benchmarks/cuda_check.py on the GPU beside them.
# The 2-core study machine could not hold item 4 this session beside the cpu-brown-findings sweep
# (both cores for 2 h 25 min), and its earlier runs were lost with /work/runs in machine restarts.
# Everything small comes back in $OUT (run folders without their checkpoints).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
D=${DATA:-.devdata/brown}
W=${WORK:-/tmp/item4}
T=${THREADS:-4}
mkdir -p "$W" "$OUT"
{ lscpu; nproc; python3 -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; nvidia-smi -L; } > "$OUT/host.txt" 2>&1
run() {  # kind seed minutes
  local r=$W/paper-ptb-$1-s$2
  OMP_NUM_THREADS=$T python3 -m dualsparse train --preset paper-ptb-$1 --data "$D" --out "$r" \
    --seed "$2" --set train.threads=$T ${SETS:-} --max-minutes "$3" --no-progress > "$r.log" 2>&1 || return
  if [ "$1" = egru ]; then
    OMP_NUM_THREADS=$T python3 -m dualsparse activity "$r" --split valid --no-plots --json \
      --data "$D" > "$r/activity-valid.json" 2>> "$r.log"
  fi
}
for s in 1 2; do
  run egru $s "${EGRU_MIN:-6}" &
  run lstm $s "${LSTM_MIN:-7}" &
done
OMP_NUM_THREADS=${CHECK_THREADS:-2} python3 benchmarks/cuda_check.py --data "$D" \
  --device "${DEVICE:-cuda}" ${CHECK_ARGS:-} > "$OUT/cuda_check.txt" 2>&1
echo "cuda_check exit $?" >> "$OUT/cuda_check.txt"
wait
tar -C "$W" --exclude='checkpoints' --exclude='*.safetensors' -czf "$OUT/item4.tar.gz" .
ls -la "$W"/*/ > "$OUT/listing.txt" 2>&1
echo done
