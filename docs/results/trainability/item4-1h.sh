#!/usr/bin/env bash
# item 4 at one hour: the EGRU runs (started with CHUNKS=6 as +2h, stopped after their 3rd chunk
# because they were already far below the unigram model) are renamed +1h and measured; then the
# LSTM gets the same budget (3 chunks of 20 minutes), 2 seeds side by side
cd /work/runs/trainability
while pgrep -f "dualsparse train --resume runs/paper-ptb-egru" > /dev/null; do sleep 5; done
for s in 1 2; do
  date -u +%FT%TZ >> runs/paper-ptb-egru+2h-s$s.meta/chunks
  mv runs/paper-ptb-egru+2h-s$s runs/paper-ptb-egru+1h-s$s
  mv runs/paper-ptb-egru+2h-s$s.meta runs/paper-ptb-egru+1h-s$s.meta
  mv logs/paper-ptb-egru+2h-s$s.txt logs/paper-ptb-egru+1h-s$s.txt
done
export PAPER_CODE=/work/runs/study-code-item4 CHUNKS=3 CHUNK_MIN=20
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-egru+1h $s & done; wait
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-lstm+1h $s & done; wait
echo item4 done
