#!/usr/bin/env bash
# item 4, second budget (2026-12-04 evening): this session's idle core trained the EGRU at 450 tokens/s
# (633 this morning), so 30 minutes reach only about 0.75 epoch. After item4-30m.sh has ended, each
# EGRU's 30-minute run is copied to +60m (the 30-minute folder stays as it was measured) and given
# 3 more chunks of 10 minutes, then measured and collected the same way.
cd /work/runs/trainability
while ! grep -q "item4 done" item4-30m.log 2>/dev/null; do sleep 10; done
export PAPER_CODE=/work/runs/study-code-item4 CHUNKS=6 CHUNK_MIN=10
for s in 1 2; do
  from=paper-ptb-egru+30m-s$s to=paper-ptb-egru+60m-s$s
  if [ ! -e runs/$to.meta ]; then
    cp -a runs/$from runs/$to && cp -a runs/$from.meta runs/$to.meta && cp logs/$from.txt logs/$to.txt
    rm -f runs/$to/.study-done runs/$to/.study-trained runs/$to/activity-valid.json
  fi
done
for s in 1 2; do /work/main/docs/results/trainability/job.sh paper-ptb-egru+60m $s & done; wait
STUDY_DIR=$PWD python /work/main/docs/results/trainability/collect.py ${BROWN:-/work/shared/data/brown} > collect.txt
echo item4-60m done
