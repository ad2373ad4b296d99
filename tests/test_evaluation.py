"""The walk over a split (``walk_split``) and the perplexity built on it, against
hand-counted windows and one long forward pass over the same columns."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_run_config
from dualsparse.data.batching import batchify
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import evaluate, walk_split
from dualsparse.models.lm import LanguageModel

VOCAB = 64


def tiny_model(model_type: str = "egru") -> LanguageModel:
    """Dropouts on (TINY_RUN's defaults), so a walk that left train mode on would differ."""
    torch.manual_seed(0)
    cfg = tiny_run_config({"type": model_type, "carry_local_state": True}).model
    return LanguageModel(cfg, VOCAB)


def test_windows_predict_every_token_of_the_columns_once():
    # 37 tokens in 3 columns: 12 rows (token 36 dropped), 11 predictions per column,
    # windows of 4, 4 and 3 rows; column j holds tokens 12j .. 12j + 11.
    data = torch.arange(37)
    windows = list(walk_split(tiny_model(), data, batch_size=3, bptt=4))
    assert [w.start for w in windows] == [0, 4, 8]
    assert [w.inputs.shape for w in windows] == [(4, 3), (4, 3), (3, 3)]
    predicted = torch.cat([w.targets for w in windows]).flatten().tolist()
    assert sorted(predicted) == [t for t in range(36) if t not in (0, 12, 24)]
    for w in windows:
        assert torch.equal(w.targets, w.inputs + 1)  # each target is the next token
        assert w.output.logits.shape == (w.inputs.shape[0], 3, VOCAB)


@pytest.mark.parametrize("model_type", ["egru", "lstm"])
def test_carried_state_makes_windows_equal_one_long_forward(model_type):
    model = tiny_model(model_type).double()
    data = torch.randint(0, VOCAB, (23,), generator=torch.Generator().manual_seed(1))
    source = batchify(data, 2)  # 11 rows: windows of 5 and 5 predictions
    walked = list(walk_split(model, data, batch_size=2, bptt=5))
    assert len(walked) == 2
    model.eval()
    with torch.no_grad():
        whole = model(source[:-1])
    torch.testing.assert_close(
        torch.cat([w.output.logits for w in walked]), whole.logits, rtol=0, atol=1e-12
    )
    for k, y in enumerate(whole.layer_outputs):
        torch.testing.assert_close(
            torch.cat([w.output.layer_outputs[k] for w in walked]), y, rtol=0, atol=1e-12
        )


def test_walk_runs_in_eval_mode_without_graph_and_restores_the_mode():
    model = tiny_model().train()
    for window in walk_split(model, torch.arange(30), batch_size=2, bptt=4):
        assert not model.training
        assert not window.output.logits.requires_grad
    assert model.training
    model.eval()
    list(walk_split(model, torch.arange(30), batch_size=2, bptt=4))
    assert not model.training


def test_walk_shows_a_progress_bar_only_when_asked(capsys):
    list(walk_split(tiny_model(), torch.arange(30), 2, 4, progress=True, desc="walking"))
    assert "walking" in capsys.readouterr().err
    list(walk_split(tiny_model(), torch.arange(30), 2, 4, desc="walking"))
    assert capsys.readouterr().err == ""


def test_walk_rejects_a_window_of_no_steps():
    with pytest.raises(DualsparseError, match="bptt"):
        next(walk_split(tiny_model(), torch.arange(30), 2, 0))


def test_perplexity_is_that_of_one_long_forward_pass():
    model = tiny_model().double()
    data = torch.randint(0, VOCAB, (41,), generator=torch.Generator().manual_seed(2))
    result = evaluate(model, data, batch_size=2, bptt=3)  # 20 rows: 7 windows
    source = batchify(data, 2)
    with torch.no_grad():
        logits = model.eval()(source[:-1]).logits
    nll = F.cross_entropy(logits.reshape(-1, VOCAB), source[1:].reshape(-1)).item()
    assert result.tokens == 38
    assert result.loss == pytest.approx(nll, abs=1e-12)
    assert result.perplexity == pytest.approx(math.exp(nll), rel=1e-12)
