#!/usr/bin/env bash
# item 4 again (2026-12-04): the 1-hour runs of 2026-12-03 were lost with their folders in a machine
# restart before they were collected, so the presets are run anew at a budget this session can hold:
# 30 minutes each (3 chunks of 10), EGRU seeds 1 and 2 side by side, then the LSTM's
cd /work/runs/trainability
export PAPER_CODE=/work/runs/study-code-item4 CHUNKS=3 CHUNK_MIN=10
# each pair is collected into the work tree (runs.jsonl) as soon as it ends: the run folders
# outside it did not outlive two machine restarts
collect="python /work/main/docs/results/trainability/collect.py ${BROWN:-/work/shared/data/brown}"
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-egru+30m $s & done; wait
STUDY_DIR=$PWD $collect > collect.txt
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-lstm+30m $s & done; wait
STUDY_DIR=$PWD $collect > collect.txt
echo item4 done
