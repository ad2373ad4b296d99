#!/usr/bin/env bash
# One study job: NAME SEED [overrides...]; resumable; markers in runs/NAME-sSEED/.
set -u
BROWN=${BROWN:-/work/shared/data/brown}  # the corpus (PTB format)
cd /work/runs/trainability
export PYTHONPATH=/work/runs/study-code/src OMP_NUM_THREADS=1
name=$1; seed=$2; shift 2
sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
run=runs/$name-s$seed
log=logs/$name-s$seed.txt
mkdir -p logs
[ -e "$run/.study-done" ] && exit 0
if [[ $name == cs-* ]]; then
  # Item 5: cpu-small-egru (as at study-code-head) for 2 epochs, with the overrides of the queue line.
  export PYTHONPATH=/work/runs/study-code-head/src
  if [ ! -e "$run/.study-trained" ]; then
    mkdir -p "$run.meta"; (cd /work/runs/study-code-head && git rev-parse HEAD) >> "$run.meta/commits"
    if [ -e "$run/config.json" ] && [ -d "$run/checkpoints" ]; then
      nice -n 19 python -m dualsparse train --resume "$run" --no-progress >> "$log" 2>&1 || exit 1
    else
      rm -rf "$run"
      nice -n 19 python -m dualsparse train --preset cpu-small-egru --data "$BROWN" --out "$run" --seed "$seed" --set train.epochs=2 --set train.threads=1 "${sets[@]}" --no-progress >> "$log" 2>&1 || exit 1
    fi
    touch "$run/.study-trained"
  fi
  nice -n 19 python -m dualsparse activity "$run" --split valid --no-plots --json --data "$BROWN" > "$run/activity-valid.json" 2>> "$log" || exit 1
  touch "$run/.study-done"; exit 0
fi
if [[ $name == paper-* ]]; then
  # Item 4 (at nice -2: ahead of other work on the machine, which would starve a wall-clock budget): a shipped
  # paper-size preset (NAME = preset, or preset+label for a second budget of it) as it stands in the clone
  # PAPER_CODE, in CHUNKS chunks of CHUNK_MIN minutes, each bounding its own closing validation;
  # metrics.jsonl holds a learning curve. The first runs: 2fdda6c, 3 (then 6) chunks of 8.333 minutes.
  code=${PAPER_CODE:-/work/runs/study-code-head}
  export PYTHONPATH=$code/src
  preset=${name%%+*}
  mkdir -p "$run.meta"; (cd "$code" && git rev-parse HEAD) >> "$run.meta/commits"
  touch "$run.meta/chunks"
  while [ "$(wc -l < "$run.meta/chunks")" -lt ${CHUNKS:-3} ]; do
    if [ -d "$run/checkpoints" ]; then
      nice -n -2 python -m dualsparse train --resume "$run" --max-minutes ${CHUNK_MIN:-8.333} --no-progress >> "$log" 2>&1 || exit 1
    else
      rm -rf "$run"
      nice -n -2 python -m dualsparse train --preset "$preset" --data "$BROWN" --out "$run" --seed "$seed" --set train.threads=1 "${sets[@]}" --max-minutes ${CHUNK_MIN:-8.333} --no-progress >> "$log" 2>&1 || exit 1
    fi
    date -u +%FT%TZ >> "$run.meta/chunks"
  done
  touch "$run/.study-trained"
  if [[ $preset == *-egru ]]; then
    nice -n -2 python -m dualsparse activity "$run" --split valid --no-plots --json --data "$BROWN" > "$run/activity-valid.json" 2>> "$log" || exit 1
  fi
  touch "$run/.study-done"; exit 0
fi
if [ ! -e "$run/.study-trained" ]; then
  mkdir -p "$run.meta"; (cd /work/runs/study-code && git rev-parse HEAD) >> "$run.meta/commits"
  if [ -e "$run/config.json" ] && [ -d "$run/checkpoints" ]; then
    nice -n 19 python -m dualsparse train --resume "$run" --no-progress >> "$log" 2>&1 || exit 1
  else
    rm -rf "$run"
    nice -n 19 python -m dualsparse train --config base.yaml --data "$BROWN" --out "$run" --seed "$seed" "${sets[@]}" --no-progress >> "$log" 2>&1 || exit 1
  fi
  touch "$run/.study-trained"
fi
nice -n 19 python -m dualsparse activity "$run" --split valid --no-plots --json --data "$BROWN" > "$run/activity-valid.json" 2>> "$log" || exit 1
touch "$run/.study-done"
