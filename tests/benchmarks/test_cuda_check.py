"""benchmarks/cuda_check.py on CPU, at a tiny size: its training, comparison and exit codes.

The "device" side is a float64 copy of the model on the CPU, so the comparison
code runs for real and has something to disagree about.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_corpus
from dualsparse.data.batching import bptt_windows
from dualsparse.data.corpus import read_corpus

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cuda_check.py"
SPEC = importlib.util.spec_from_file_location("cuda_check", SCRIPT)
cuda_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cuda_check)

TINY = ["--device", "cpu", "--emb", "16", "--hidden", "24,24,16", "--steps", "3"]
TINY += ["--batch-size", "2", "--bptt", "8", "--gru-steps", "2", "--json"]


@pytest.fixture
def corpus_dir(tmp_path: Path) -> str:
    return str(write_tiny_corpus(tmp_path / "corpus"))


def test_cpu_against_float64_passes_and_reports(corpus_dir, capsys):
    code = cuda_check.main([*TINY, "--data", corpus_dir, "--compare-dtype", "float64"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["passed"]
    assert (
        out["steps"] == 3
        and out["epochs"] == 1
        and out["hidden"] == [24, 24, 16]
        and out["emb"] == 16
    )
    # float32 against float64 of the same weights: close, but not bit-equal
    assert 0 < out["loss_rel_diff"] < 1e-5
    assert out["loss_rel_diff"] == pytest.approx(
        abs(out["device_loss"] - out["cpu_loss"]) / out["cpu_loss"]
    )
    assert out["egru_tokens_per_s"] > 0 and out["nn_gru_tokens_per_s"] > 0
    assert math.isfinite(out["valid_ppl"])


def test_more_steps_than_the_corpus_holds_walk_it_several_times(corpus_dir):
    corpus = read_corpus(corpus_dir)
    rows = corpus.train.numel() // 2  # batch 2
    available = (rows - 1) // 8  # whole windows of bptt 8
    cut, epochs = cuda_check.fit_steps(corpus, 2 * available + 1, 2, 8)
    assert epochs == 3
    per_epoch = math.ceil((2 * available + 1) / 3)
    assert cut.train.numel() == per_epoch * 8 * 2 + 2
    windows = bptt_windows(cut.train.numel() // 2, 8, variable=False)
    assert windows == [(8 * k, 8) for k in range(per_epoch)]


def test_tolerance_below_float32_error_fails_with_one_line(corpus_dir, capsys):
    argv = [*TINY, "--data", corpus_dir, "--compare-dtype", "float64", "--loss-rtol", "1e-12"]
    assert cuda_check.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("FAILED: device differs from CPU")


def test_loss_and_grad_norm_against_plain_autograd(corpus_dir):
    """The eval-mode loss and gradient norm, recomputed here from the model's logits."""
    args = cuda_check.parse_args([*TINY, "--data", corpus_dir])
    cfg = cuda_check.make_config(args)
    torch.manual_seed(0)
    model = cuda_check.LanguageModel(cfg.model, 30)
    tokens = torch.randint(0, 30, (8, 3))
    targets = torch.randint(0, 30, (8, 3))
    loss, grad_norm = cuda_check.loss_and_grad_norm(model, tokens, targets)
    model.zero_grad()
    logits = model(tokens).logits
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    expected.backward()
    norms = torch.tensor([p.grad.norm() for p in model.parameters() if p.grad is not None])
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert grad_norm == pytest.approx(norms.norm().item(), rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_asked_but_absent_exits_2(corpus_dir, capsys):
    assert cuda_check.main(["--device", "cuda", "--data", corpus_dir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]
