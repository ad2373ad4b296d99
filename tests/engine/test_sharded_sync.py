"""Threads meeting inside one parallel region (``kernels_sharded._claim``): every shard of a
phase runs exactly once and after the whole previous phase, however many threads the
region gets (one thread running every iteration included, which a barrier that waits for
all threads to arrive would deadlock on), and the sharded EGRU equals one thread."""

import numba
import numpy as np
import pytest

from dualsparse.engine.bench import synthetic_model
from dualsparse.engine.kernels_sharded import (
    PHASES,
    _claim,
    _done,
    _start_phases,
    _wait_done,
    sync_size,
)
from dualsparse.engine.runtime import Engine


@numba.njit(parallel=True)
def _run_phases(sync, runs, finished_before):
    """runs[phase, s]: how often shard s of phase ran; finished_before[phase, s]: how many
    shards of the previous phase had finished when it started."""
    count = runs.shape[1]
    _start_phases(sync)
    for w in numba.prange(count):
        for phase in range(PHASES):
            s = _claim(sync, phase, count, w)
            while s >= 0:
                if phase > 0:
                    finished_before[phase, s] = runs[phase - 1].sum()
                total = 0.0
                for i in range(2000 * (s + 1)):  # uneven shards, so that threads overtake
                    total += np.sqrt(i)
                runs[phase, s] += 1 + 0 * int(total)
                _done(sync, phase, count)
                s = _claim(sync, phase, count, w)
            _wait_done(sync, phase, count)


def _with_numba_threads(n: int):
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return previous


@pytest.mark.parametrize("numba_threads", [1, 2])
@pytest.mark.parametrize("shards", [1, 2, 5])
def test_every_shard_runs_once_per_phase_after_the_previous_phase(shards, numba_threads):
    previous = _with_numba_threads(numba_threads)
    try:
        sync = np.zeros(sync_size(shards), dtype=np.int64)
        for _ in range(20):  # the same sync array, reused call after call as in a layer
            runs = np.zeros((PHASES, shards), dtype=np.int64)
            finished_before = np.full((PHASES, shards), -1, dtype=np.int64)
            _run_phases(sync, runs, finished_before)
            assert (runs == 1).all()
            assert (finished_before[1:] == shards).all()
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("numba_threads", [1, 2])
def test_sharded_egru_on_fewer_threads_than_shards_equals_one_thread(numba_threads):
    model = synthetic_model("egru", 24, [90, 70], 120, 0.6, seed=7, threshold=0.02)
    tokens = np.random.default_rng(8).integers(0, 120, 30)
    previous = _with_numba_threads(numba_threads)
    try:
        single, sharded = Engine(model), Engine(model, threads=3)
        np.testing.assert_allclose(single.score(tokens), sharded.score(tokens), atol=1e-9)
    finally:
        numba.set_num_threads(previous)
    assert 0.05 < min(single.counts()["layer_activity"])  # units fire, so r ⊙ y matters
    assert single.counts() == sharded.counts()
    for one, three in zip(single.layers, sharded.layers, strict=True):
        assert np.array_equal(one.out, three.out) and np.array_equal(one.cell, three.cell)
