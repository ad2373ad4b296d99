#!/usr/bin/env bash
# One job of the trainability study: NAME SEED [key=value overrides...].
# Resumable: a stopped run is resumed; markers .study-trained / .study-done in the run.
# STUDY_DIR: where runs/ and logs/ go (default: the current directory, which holds base.yaml);
# BROWN: the Brown corpus directory (default ../shared/data/brown).
set -u
root=${STUDY_DIR:-$PWD}
data=${BROWN:-../shared/data/brown}
name=$1; seed=$2; shift 2
sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
run=$root/runs/$name-s$seed
log=$root/logs/$name-s$seed.txt
mkdir -p "$root/logs" "$root/runs"
[ -e "$run/.study-done" ] && exit 0
if [ ! -e "$run/.study-trained" ]; then
  if [ -e "$run/config.json" ] && [ -d "$run/checkpoints" ]; then
    nice -n 19 python -m dualsparse train --resume "$run" --no-progress >> "$log" 2>&1 || exit 1
  else
    rm -rf "$run"
    nice -n 19 python -m dualsparse train --config "$root/base.yaml" --data "$data" --out "$run" \
      --seed "$seed" "${sets[@]}" --no-progress >> "$log" 2>&1 || exit 1
  fi
  touch "$run/.study-trained"
fi
nice -n 19 python -m dualsparse activity "$run" --split valid --no-plots --json --data "$data" \
  > "$run/activity-valid.json" 2>> "$log" || exit 1
touch "$run/.study-done"
