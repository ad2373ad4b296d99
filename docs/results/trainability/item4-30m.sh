#!/usr/bin/env bash
# item 4 again (2026-12-04): the 1-hour runs of 2026-12-03 were lost with their folders in a machine
# restart before they were collected, so the presets are run anew at a budget this session can hold:
# 30 minutes each (3 chunks of 10), EGRU seeds 1 and 2 side by side, then the LSTM's
cd /work/runs/trainability
export PAPER_CODE=/work/runs/study-code-item4 CHUNKS=3 CHUNK_MIN=10
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-egru+30m $s & done; wait
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-lstm+30m $s & done; wait
echo item4 done
