import pytest
import torch

from dualsparse.data.batching import batchify, bptt_windows, get_batch, lr_scale
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batchify_columns_are_contiguous_and_remainder_dropped():
    batched = batchify(torch.arange(10), 3)
    assert batched.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert batched.is_contiguous()


@pytest.mark.parametrize(
    "batch_size, expected", [(11, "larger than the data (10 tokens)"), (0, "at least 1, got 0")]
)
def test_batchify_bad_batch_size(batch_size, expected):
    with pytest.raises(DualsparseError) as info:
        batchify(torch.arange(10), batch_size)
    assert expected in str(info.value) and "--batch-size" in str(info.value)


def test_get_batch_shapes_and_shift():
    source = batchify(torch.arange(20), 2)  # column 0 is 0..9, column 1 is 10..19
    inputs, targets = get_batch(source, 0, 4)
    assert inputs.tolist() == [[0, 10], [1, 11], [2, 12], [3, 13]]
    assert targets.tolist() == [[1, 11], [2, 12], [3, 13], [4, 14]]
    inputs, targets = get_batch(source, 7, 5)  # only 2 targets remain after row 7
    assert inputs.tolist() == [[7, 17], [8, 18]]
    assert targets.tolist() == [[8, 18], [9, 19]]
    with pytest.raises(ValueError):
        get_batch(source, 9, 5)


def test_fixed_windows():
    assert bptt_windows(10, 4, variable=False, generator=None) == [(0, 4), (4, 4), (8, 1)]
    assert bptt_windows(9, 4, variable=False, generator=None) == [(0, 4), (4, 4)]


def covered_rows(windows):
    return [row for start, length in windows for row in range(start, start + length)]


@pytest.mark.parametrize("variable", [False, True])
def test_windows_cover_every_input_row_once(variable):
    windows = bptt_windows(1000, 35, variable=variable, generator=seeded(0))
    assert covered_rows(windows) == list(range(999))


def test_variable_windows_are_deterministic_and_use_only_the_generator():
    global_state = torch.get_rng_state()
    first = bptt_windows(5000, 70, variable=True, generator=seeded(1234))
    assert first == bptt_windows(5000, 70, variable=True, generator=seeded(1234))
    assert first != bptt_windows(5000, 70, variable=True, generator=seeded(1235))
    assert torch.equal(torch.get_rng_state(), global_state)


def test_variable_window_lengths_follow_awd_rule():
    windows = bptt_windows(200_000, 70, variable=True, generator=seeded(7))
    lengths = [length for _, length in windows[:-1]]  # the last one is clipped to fit
    assert min(lengths) >= 5
    full = [n for n in lengths if n > 52]  # 52 separates N(70, 5) from N(35, 5)
    assert 0.93 < len(full) / len(lengths) < 0.97
    # int() truncates, so the mean of N(70, 5) draws lands near 69.5
    assert abs(sum(full) / len(full) - 69.5) < 0.5
    short = [n for n in lengths if n <= 52]
    assert abs(sum(short) / len(short) - 34.5) < 1.5


def test_variable_windows_never_shorter_than_five():
    # With bptt 4 every draw is centred on 4 or 2, so the floor of 5 applies often.
    lengths = [n for _, n in bptt_windows(10_000, 4, variable=True, generator=seeded(3))[:-1]]
    assert min(lengths) == 5


def test_window_errors():
    with pytest.raises(DualsparseError, match="bptt must be at least 1, got 0"):
        bptt_windows(10, 0, variable=False, generator=None)
    with pytest.raises(DualsparseError, match="only 1 time step.*smaller --batch-size"):
        bptt_windows(1, 70, variable=False, generator=None)
    with pytest.raises(ValueError, match="torch.Generator"):
        bptt_windows(10, 4, variable=True, generator=None)


def test_lr_scale():
    assert lr_scale(35, 70) == 0.5
    assert lr_scale(70, 70) == 1.0


def test_epoch_over_tiny_corpus_sees_every_target_once(tiny_corpus_dir):
    corpus = read_corpus(tiny_corpus_dir)
    source = batchify(corpus.train, 4)  # 154 tokens -> 38 rows, 2 tokens dropped
    assert source.shape == (38, 4)
    windows = bptt_windows(source.size(0), 10, variable=True, generator=seeded(0))
    targets = torch.cat([get_batch(source, start, n)[1] for start, n in windows])
    assert torch.equal(targets, source[1:])
