"""Run the study queue (queue.txt: NAME SEED overrides...) with 2 workers; re-reads the queue
between jobs, so lines can be appended while it runs; a job is claimed by mkdir (atomic)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

root = Path(os.environ.get("STUDY_DIR", os.getcwd()))
(root / "runs").mkdir(exist_ok=True)


def jobs():
    for line in (root / "queue.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split()


def worker():
    while True:
        for job in jobs():
            run = root / "runs" / f"{job[0]}-s{job[1]}"
            if (run / ".study-done").exists():
                continue
            try:
                os.mkdir(f"{run}.claim")
            except FileExistsError:
                continue
            rc = subprocess.call([str(Path(__file__).resolve().parent / "job.sh"), *job])
            if rc == 0:
                os.rmdir(f"{run}.claim")
            else:
                print("failed", job, rc, flush=True)  # claim stays: not retried
            break
        else:
            return


workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
threads = [threading.Thread(target=worker) for _ in range(workers)]
for t in threads:
    t.start()
    time.sleep(5)
for t in threads:
    t.join()
print("queue done", flush=True)
