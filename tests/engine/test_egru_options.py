"""The EvNN reference's EGRU options in the engine: the reset-after candidate
(``model.reset_after``) and c restarting at every window (``model.carry_local_state``
false). The engine against the PyTorch model token by token, ``score`` against
``evaluate``, the engine's counts against ``measure_macs``, over several windows."""

import numpy as np
import pytest
import torch
from engine_helpers import VOCAB, WORDS, export_fixture

from conftest import tiny_run_config
from dualsparse.config import ModelConfig, apply_overrides, load_preset
from dualsparse.engine.export import HEADER_FILE, export_run, load_export
from dualsparse.engine.runtime import Engine
from dualsparse.engine.score import score_file
from dualsparse.evaluation import DEFAULT_BPTT, evaluate, walk_split
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.macs import measure_macs
from dualsparse.sparsity.masks import apply_masks, global_magnitude_masks

TOKENS = 2 * DEFAULT_BPTT + 31  # three windows, the last one short


@pytest.fixture
def export_dir(tmp_path):
    return export_fixture(tmp_path)


def options_model(reset_after: bool, carry_local_state: bool, seed: int = 0) -> LanguageModel:
    """A random EGRU LM (emb 8, layers 10 and 6, so a projection), half its weights pruned,
    thresholds 0.05 (about half the units fire); the default init draws b_hz nonzero."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        type="egru",
        emb_size=8,
        hidden_sizes=[10, 6],
        reset_after=reset_after,
        carry_local_state=carry_local_state,
    )
    model = LanguageModel(cfg, VOCAB).eval()
    for layer in model.layers:
        layer.threshold.data.fill_(0.05)
    params = dict(model.named_parameters())
    masks = global_magnitude_masks({n: params[n] for n in model.rnn_weight_names()}, 0.5)
    apply_masks(model, masks)
    return model


def window_log_probs(model: LanguageModel, tokens: torch.Tensor) -> np.ndarray:
    """log p(w_{t+1} | w_1..w_t) as ``evaluate`` computes them: batch 1, windows of
    DEFAULT_BPTT (the windows at which c restarts when it is not carried)."""
    out = []
    for window in walk_split(model, tokens, 1, DEFAULT_BPTT):
        lp = torch.log_softmax(window.output.logits[:, 0].double(), -1)
        out.append(lp.gather(1, window.targets)[:, 0].numpy())
    return np.concatenate(out)


def random_tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (TOKENS,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("carry_local_state", [True, False])
@pytest.mark.parametrize("reset_after", [False, True])
def test_engine_equals_pytorch_with_either_option(
    reset_after, carry_local_state, threads, export_dir
):
    model = options_model(reset_after, carry_local_state)
    tokens = random_tokens()
    directory = export_dir(model)
    for dtype, tolerance in ((np.float64, 1e-9), (np.float32, 1e-4)):
        engine = Engine.load(directory, threads=threads, dtype=dtype)
        reference = window_log_probs(
            model.to(torch.float64 if dtype == np.float64 else torch.float32), tokens
        )
        np.testing.assert_allclose(engine.score(tokens.tolist()), reference, atol=tolerance, rtol=0)
    model.float()
    # the option changes the numbers: the other setting is not what the engine computed
    model.cfg.carry_local_state = not carry_local_state
    other = window_log_probs(model, tokens)
    assert np.abs(other[:DEFAULT_BPTT] - reference[:DEFAULT_BPTT]).max() < 1e-6
    assert np.abs(other[DEFAULT_BPTT:] - reference[DEFAULT_BPTT:]).max() > 1e-3


@pytest.mark.parametrize("reset_after", [False, True])
def test_engine_counts_equal_measure_macs_and_u_z_reads_the_nonzeros_of_y(reset_after, export_dir):
    """U_z reads r ⊙ y (paper) or y (reset-after): the same nonzeros, since r = σ(·) > 0.
    Shown here with r computed from the model at every step, not assumed: the U_z event
    MACs counted from r ⊙ y equal those counted from y (measure_macs) and the engine's."""
    model = options_model(reset_after, carry_local_state=False)
    tokens = random_tokens()
    engine = Engine.load(export_dir(model))
    engine.score(tokens.tolist())
    engine_products = engine.counts()["products"]
    report = measure_macs(model, tokens, batch_size=1, bptt=DEFAULT_BPTT)
    for row in report.rows:
        counted = engine_products[row.name]
        assert counted["event_macs_total"] == row.event_macs_total, row.name
        assert counted["active_inputs"] == row.active_inputs, row.name
        assert counted["weight_nonzero"] == row.weight_nonzero, row.name
    macs_from_r_y = [0] * len(model.layers)
    with torch.no_grad():
        previous = [torch.zeros(1, layer.hidden_size) for layer in model.layers]
        for window in walk_split(model, tokens, 1, DEFAULT_BPTT):
            x = model.encoder.weight[window.inputs]
            for k, (layer, y) in enumerate(
                zip(model.layers, window.output.layer_outputs, strict=True)
            ):
                hidden = layer.hidden_size
                y_prev = torch.cat([previous[k].unsqueeze(0), y[:-1]])
                r = torch.sigmoid(
                    x @ layer.weight_ih[hidden : 2 * hidden].t()
                    + layer.bias[hidden : 2 * hidden]
                    + y_prev @ layer.weight_hh[hidden : 2 * hidden].t()
                )
                assert torch.equal((r * y_prev) != 0, y_prev != 0)
                col_nnz = (layer.weight_hh[2 * hidden :] != 0).sum(0)
                macs_from_r_y[k] += int((((r * y_prev) != 0) * col_nnz).sum())
                previous[k], x = y[-1], y
    for k in range(len(model.layers)):
        assert macs_from_r_y[k] == engine_products[f"layer{k}.U_z"]["event_macs_total"] > 0


@pytest.fixture
def paper_preset_runs(tmp_path, tiny_corpus_dir):
    """paper-ptb-egru (reset-after, c not carried) shrunk to the tiny run's sizes, trained
    one epoch on the tiny corpus; and the same with c carried."""
    from dualsparse.data.corpus import read_corpus
    from dualsparse.training.loop import train

    corpus = read_corpus(tiny_corpus_dir)
    tiny = tiny_run_config()
    shrink = [
        f"model.emb_size={tiny.model.emb_size}",
        f"model.hidden_sizes={tiny.model.hidden_sizes}",
        "model.threshold_init_mean=0.1",  # a few units fire less than always
        *(f"train.{key}={getattr(tiny.train, key)}" for key in ("epochs", "batch_size", "bptt")),
        "train.eval_batch_size=2",
    ]
    runs = {}
    for carry in (False, True):
        cfg = apply_overrides(
            load_preset("paper-ptb-egru"), [*shrink, f"model.carry_local_state={carry}"]
        )
        assert cfg.model.reset_after
        train(cfg, corpus, tmp_path / f"run-{carry}", progress=False)
        runs[carry] = tmp_path / f"run-{carry}"
    return runs, corpus, tiny_corpus_dir


def test_paper_preset_run_exports_and_scores_as_it_evaluates(paper_preset_runs, tmp_path):
    """``score`` (the engine, batch 1) equals ``evaluate`` (PyTorch, batch 1) on the same
    text, with c carried or restarted every window: the export records the options and
    the window length."""
    import json

    from dualsparse.runs import load_run

    runs, corpus, corpus_dir = paper_preset_runs
    text = corpus_dir / "train.txt"  # 154 tokens: three windows of 70
    assert len(corpus.train) > 2 * DEFAULT_BPTT
    perplexities = {}
    for carry, run_dir in runs.items():
        out = export_run(run_dir, tmp_path / f"export-{carry}")
        header = json.loads((out / HEADER_FILE).read_text())
        assert header["reset_after"] is True and header["carry_local_state"] is carry
        assert header["window"] == DEFAULT_BPTT and header["version"] == 2
        assert load_export(out).local_state_window == (None if carry else DEFAULT_BPTT)
        model = load_run(run_dir).model
        for float64, rel in ((False, 1e-5), (True, 1e-10)):
            scored = score_file(out, text, float64=float64).summary
            evaluated = evaluate(
                model.to(torch.float64 if float64 else torch.float32), corpus.train, 1
            )
            assert scored["tokens_scored"] == evaluated.tokens
            assert scored["perplexity"] == pytest.approx(evaluated.perplexity, rel=rel)
            np.testing.assert_allclose(
                scored["layer_activity"], evaluated.layer_activity, atol=1e-12 if float64 else 0.01
            )
        perplexities[carry] = scored["perplexity"]
    assert perplexities[True] != pytest.approx(perplexities[False], rel=1e-6)


def test_export_without_the_option_keys_reads_as_before(export_dir):
    """A header written before the options (no keys, version 1) loads as the paper's cell
    with c carried, and computes what the model with those settings computes."""
    import json

    model = options_model(reset_after=False, carry_local_state=True)
    directory = export_dir(model)
    path = directory / HEADER_FILE
    header = json.loads(path.read_text())
    assert header["version"] == 1
    for key in ("reset_after", "carry_local_state", "window"):
        del header[key]
    path.write_text(json.dumps(header))
    loaded = load_export(directory)
    assert not loaded.reset_after and loaded.local_state_window is None
    tokens = random_tokens()
    reference = window_log_probs(model.double(), tokens)
    engine = Engine(loaded, dtype=np.float64)
    np.testing.assert_allclose(engine.score(tokens.tolist()), reference, atol=1e-9, rtol=0)
    assert WORDS == loaded.itos


@pytest.mark.parametrize("carry_local_state", [True, False])
def test_score_compare_walks_the_pytorch_model_in_the_engines_windows(carry_local_state):
    """`score --compare`'s PyTorch side restarts c where the engine and `evaluate` do."""
    from dualsparse.engine.compare import torch_log_probs

    model = options_model(reset_after=True, carry_local_state=carry_local_state)
    tokens = random_tokens()
    log_probs, _ = torch_log_probs(model, tokens.numpy(), "float64")
    np.testing.assert_allclose(log_probs, window_log_probs(model.double(), tokens), atol=1e-12)
