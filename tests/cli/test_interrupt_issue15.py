"""Ctrl-C at any moment of a command, its start-up imports included, is one line and exit
130 (issue 15, point 9: 3 of 30 Ctrl-Cs during start-up printed a traceback).

Each child runs with ``-X importtime``, which reports every import on stderr as it ends;
the signal is timed from the report of ``dualsparse.cli``, the entry point's module. Before
it, no line of dualsparse's own code has run: Python is starting (its site-packages hooks,
then for ``-m`` runpy's lookup of ``dualsparse.__main__``, a few ms), and a Ctrl-C there
is Python's own traceback, which the package cannot catch."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("dualsparse")  # what pip installed for the entry point
EVALUATE = [sys.executable, "-X", "importtime", "-m", "dualsparse", "evaluate", "/no/such/run"]
PRESETS = [sys.executable, "-X", "importtime", str(SCRIPT), "presets"]
# evaluate imports torch (most of its first seconds), then fails with exit 2; presets
# through pip's script is over in well under a second, so its last delay hits its exit
CASES = [(EVALUATE, d) for d in (0.0, 0.15, 0.4, 0.8, 1.4)] + [(PRESETS, d) for d in (0, 0.1, 0.4)]


def interrupted_after_dualsparse_loads(command: list[str], delay: float) -> tuple[int, str]:
    """Start ``command``, send SIGINT ``delay`` seconds after its CLI module is imported;
    its exit status and stderr (the import reports left out)."""
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    loaded, lines = threading.Event(), []

    def read_stderr():  # drained all along, so the child never waits on a full pipe
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            if line.rstrip().endswith("| dualsparse.cli"):
                loaded.set()
            if not line.startswith("import time:"):
                lines.append(line)
        loaded.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    try:
        assert loaded.wait(60)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        proc.kill()
        reader.join()
        proc.stderr.close()
    return proc.returncode, "".join(lines)


IDS = [f"{'python-m-evaluate' if c[3] == '-m' else 'script-presets'}-{d}" for c, d in CASES]


@pytest.mark.parametrize("command, delay", CASES, ids=IDS)
def test_ctrl_c_at_start_up_is_one_line_and_exit_130(command, delay):
    if not Path(command[3]).exists() and command[3] != "-m":
        pytest.skip(f"no {command[3]}: the package is not installed with its entry point")
    rc, err = interrupted_after_dualsparse_loads(command, delay)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if rc == 130:
        assert err == "interrupted\n"
    else:  # the command was over before the signal: its own ending, untouched
        assert (rc, err) in ((0, ""), (2, err)) and err.count("\n") <= 1, (rc, err)
