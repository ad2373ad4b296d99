#!/usr/bin/env bash
# after 3 chunks of seed 1 of both paper presets: 3 more chunks each (50 minutes in all),
# to see whether they pass below the unigram model; seed 2 waits for the next session
cd /work/runs/trainability
while pgrep -f "job.sh paper-ptb-.* 1" > /dev/null; do sleep 10; done
for m in egru lstm; do
  r=runs/paper-ptb-$m-s1
  rm -f $r/.study-done $r/.study-trained
  (mkdir $r.claim; CHUNKS=6 ./job.sh paper-ptb-$m 1; rmdir $r.claim) &
done
wait
