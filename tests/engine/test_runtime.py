"""The streaming engine against the PyTorch model: log-probs, activity and MACs, token by token."""

import json
import math

import numpy as np
import pytest
import torch
from engine_helpers import VOCAB, export_fixture, random_model

from conftest import SHARED_DATA, tiny_run_config
from dualsparse.cli import main
from dualsparse.engine import jit
from dualsparse.engine.compare import torch_log_probs
from dualsparse.engine.export import export_run, load_export
from dualsparse.engine.runtime import Engine, encode_text_lines
from dualsparse.errors import DualsparseError
from dualsparse.sparsity.macs import measure_macs


@pytest.fixture
def export_dir(tmp_path):
    return export_fixture(tmp_path)


def assert_engine_matches(model, engine: Engine, tokens: torch.Tensor) -> dict:
    engine.reset()
    np.testing.assert_allclose(
        engine.score(tokens.tolist()),
        torch_log_probs(model, tokens.numpy(), "float32")[0],
        atol=1e-4,
        rtol=0,
    )
    counts = engine.counts()
    report = measure_macs(model, tokens, batch_size=1, bptt=7)
    assert counts["tokens"] == report.tokens == len(tokens) - 1
    for row in report.rows:
        engine_row = counts["products"][row.name]
        assert engine_row["active_inputs"] == row.active_inputs, row.name
        assert engine_row["event_macs_total"] == row.event_macs_total, row.name
        assert engine_row["weight_nonzero"] == row.weight_nonzero, row.name
    assert counts["event_macs_per_token"]["rnn"] == pytest.approx(
        report.totals("rnn")["event_macs_per_token"]
    )
    return counts


@pytest.mark.parametrize("input_table", [False, True])
@pytest.mark.parametrize("weight_sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("model_type", ["egru", "lstm", "gru"])
def test_engine_equals_pytorch(model_type, weight_sparsity, input_table, export_dir):
    model = random_model(model_type, weight_sparsity)
    engine = Engine.load(export_dir(model), input_table=input_table)
    tokens = torch.randint(0, VOCAB, (60,), generator=torch.Generator().manual_seed(1))
    counts = assert_engine_matches(model, engine, tokens)
    if model_type == "egru":
        assert all(0.0 < a < 1.0 for a in counts["layer_activity"])
    if input_table:
        assert engine.table_bytes == VOCAB * model.layers[0].weight_ih.shape[0] * 4


@pytest.mark.parametrize("model_type", ["egru", "lstm", "gru"])
def test_two_threads_over_rows_equal_one_thread(model_type, export_dir):
    """Layers (by units) and the decoder (by vocabulary) split their rows over threads; the
    single-threaded arithmetic is kept entry for entry, so log-probs and counts are equal."""
    model = random_model(model_type, 0.7, hidden_sizes=(11, 6))  # an odd layer size
    directory = export_dir(model)
    tokens = torch.randint(0, VOCAB, (50,), generator=torch.Generator().manual_seed(5))
    single, sharded = Engine.load(directory), Engine.load(directory, threads=2, input_table=True)
    np.testing.assert_allclose(
        sharded.score(tokens.tolist()), single.score(tokens.tolist()), atol=1e-6, rtol=0
    )
    assert sharded.counts() == single.counts()
    assert_engine_matches(model, sharded, tokens)


@pytest.mark.parametrize("model_type", ["egru", "gru"])
def test_float64_engine_equals_a_float64_pytorch_model(model_type, export_dir):
    """Double precision on both sides from the same float32 weights: the reference mode
    that stays equal over long texts, where float32 event timing may differ by a step."""
    model = random_model(model_type, 0.5)
    engine = Engine.load(export_dir(model), dtype=np.float64, threads=2)
    tokens = torch.randint(0, VOCAB, (200,), generator=torch.Generator().manual_seed(7))
    log_probs = engine.score(tokens.tolist())
    assert log_probs.dtype == np.float64 and engine.logits.dtype == np.float64
    np.testing.assert_allclose(
        log_probs, torch_log_probs(model, tokens.numpy(), "float64")[0], atol=1e-9, rtol=0
    )


def test_egru_without_projection_feeds_the_decoder_sparsely(export_dir):
    model = random_model("egru", 0.7, hidden_sizes=(10, 8))  # last size = emb: no projection
    assert model.projection is None
    engine = Engine.load(export_dir(model))
    tokens = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(2))
    counts = assert_engine_matches(model, engine, tokens)
    decoder = counts["products"]["decoder"]
    assert decoder["active_inputs"] < 8 * counts["tokens"]  # only active units were read


def test_untied_decoder_reads_the_last_layer(export_dir):
    model = random_model("egru", 0.5, tie_weights=False)  # decoder [V, 6], no projection
    assert model.projection is None and model.decoder.weight.shape == (VOCAB, 6)
    engine = Engine.load(export_dir(model))
    assert not engine.model.tied
    tokens = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(6))
    assert_engine_matches(model, engine, tokens)


def test_no_unit_ever_fires_when_thresholds_are_one(export_dir):
    """ĉ stays below 1 (|z| < 1 and c is a convex mix), so θ = 1 silences every layer."""
    model = random_model("egru", 0.5, threshold=1.0)
    engine = Engine.load(export_dir(model))
    tokens = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(3))
    counts = assert_engine_matches(model, engine, tokens)
    assert counts["layer_activity"] == [0.0, 0.0]
    products = counts["products"]
    for name in (
        "layer0.U_ur",
        "layer0.U_z",
        "layer1.W_ih",
        "layer1.U_ur",
        "layer1.U_z",
        "projection",
        "decoder",
    ):
        assert products[name]["event_macs_total"] == 0, name
    # the logits are the decoder bias alone: every step predicts the same distribution
    assert np.allclose(engine.logits, model.decoder.bias.detach().numpy())


def test_state_carries_across_calls_and_reset_clears_it(export_dir):
    model = random_model("egru", 0.5)
    engine = Engine.load(export_dir(model))
    tokens = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(4)).tolist()
    whole = engine.score(tokens)
    engine.reset()
    first = engine.score(tokens[:16])
    engine.step(tokens[15])
    rest = [engine.log_prob(tokens[16])] + list(engine.score(tokens[16:]))
    np.testing.assert_allclose(np.concatenate([first, rest]), whole, atol=1e-6)


def test_greedy_generation_follows_the_pytorch_argmax(export_dir):
    model = random_model("lstm", 0.3)
    engine = Engine.load(export_dir(model))
    sampled = engine.generate([3, 4], max_tokens=6, temperature=0.0)
    sequence = [3, 4]
    with torch.no_grad():
        for _ in range(6):
            logits = model(torch.tensor(sequence).view(-1, 1)).logits[-1, 0]
            sequence.append(int(logits.argmax()))
    assert sampled == sequence[2:]


def test_sampling_is_reproducible_from_the_seed(export_dir):
    directory = export_dir(random_model("egru", 0.5))
    runs = [Engine.load(directory).generate([], 20, 1.0, seed) for seed in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]
    with pytest.raises(DualsparseError, match="temperature"):
        Engine.load(directory).generate([], 2, -1.0)


def test_token_ids_outside_the_vocabulary_are_refused(export_dir):
    engine = Engine.load(export_dir(random_model("egru", 0.0)))
    for ids in ([0, VOCAB], [-1, 2]):
        with pytest.raises(DualsparseError, match="Engine.encode"):
            engine.score(ids)
    with pytest.raises(DualsparseError, match="token ids"):
        engine.generate([VOCAB + 3], 1)


def test_missing_numba_is_a_clear_error(monkeypatch, export_dir):
    directory = export_dir(random_model("gru", 0.0))
    monkeypatch.setattr(jit, "numba", None)
    with pytest.raises(DualsparseError, match=r"pip install 'dualsparse\[engine\]'"):
        Engine.load(directory)


def test_text_encoding_follows_the_corpus_convention(export_dir):
    engine = Engine.load(export_dir(random_model("egru", 0.0)))
    words = encode_text_lines("w1 w2\n\nw3 zebra\n")
    assert words == ["w1", "w2", "<eos>", "<eos>", "w3", "zebra", "<eos>"]
    ids, unknown = engine.encode(words)
    assert unknown == 1 and ids[5] == engine.token_id("<unk>")


@pytest.fixture
def pruned_tiny_run(tmp_path, tiny_corpus_dir):
    """A tiny EGRU trained one epoch on the tiny corpus, pruned to 60% without fine-tuning."""
    from dualsparse.data.corpus import read_corpus
    from dualsparse.sparsity.prune import prune_run
    from dualsparse.training.loop import train

    corpus = read_corpus(tiny_corpus_dir)
    train(tiny_run_config(), corpus, tmp_path / "run", progress=False)
    prune_run(
        tmp_path / "run", tmp_path / "pruned", corpus, target=0.6, finetune_epochs=0, progress=False
    )
    return tmp_path / "pruned", corpus


def test_exported_run_scores_its_test_split_like_pytorch(pruned_tiny_run, tmp_path):
    from dualsparse.runs import load_run

    run_dir, corpus = pruned_tiny_run
    out = export_run(run_dir, tmp_path / "export")
    assert load_export(out).header["source"]["run"] == str(run_dir)
    model = load_run(run_dir).model
    assert_engine_matches(model, Engine.load(out), corpus.test)


def test_cli_export_score_generate(pruned_tiny_run, tiny_corpus_dir, tmp_path, capsys):
    run_dir, corpus = pruned_tiny_run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert "RNN weight sparsity 0.600" in capsys.readouterr().out
    assert main(["score", str(out), str(tiny_corpus_dir / "test.txt"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["tokens_scored"] == len(corpus.test) - 1
    assert scored["perplexity"] == pytest.approx(math.exp(-np.mean(scored["log_probs"])))
    assert main(["score", str(out), str(tiny_corpus_dir / "test.txt"), "--json", "--float64"]) == 0
    reference = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(reference["log_probs"], scored["log_probs"], atol=1e-4)
    assert main(["score", str(out), str(tiny_corpus_dir / "test.txt"), "--per-token"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("1\told\t") and "perplexity" in text
    assert (
        main(
            [
                "generate",
                str(out),
                "--prompt",
                "the cat",
                "--max-tokens",
                "5",
                "--seed",
                "3",
                "--json",
            ]
        )
        == 0
    )
    generated = json.loads(capsys.readouterr().out)
    assert len(generated["words"]) == 5 and generated["unknown_prompt_words"] == 0
    assert main(["generate", str(out), "--prompt", "the", "--max-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("the")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["score", str(tmp_path / "none"), str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err.startswith("error: model directory")
    assert main(["export", str(tmp_path / "none"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: run directory")


@pytest.mark.skipif(
    not (SHARED_DATA / "ptb" / "ptb.test.txt").is_file(),
    reason="the real PTB test file is not in ../shared/data/ptb",
)
def test_real_ptb_text_through_a_pruned_run(pruned_tiny_run, tmp_path):
    """The first 3,000 tokens of the real PTB test file, mostly <unk> for the tiny run's
    vocabulary: log-probs, activity and MACs still equal PyTorch's and measure_macs'."""
    from dualsparse.data.corpus import read_tokens
    from dualsparse.runs import load_run

    run_dir, _ = pruned_tiny_run
    run = load_run(run_dir)
    words = read_tokens(SHARED_DATA / "ptb" / "ptb.test.txt")[:3000]
    engine = Engine.load(export_run(run_dir, tmp_path / "export"))
    ids, unknown = engine.encode(words)
    assert ids == run.vocab.encode(words) and unknown > 0
    assert_engine_matches(run.model, engine, torch.tensor(ids))


def test_engine_runs_where_torch_cannot_be_imported(export_dir):
    """Deployment needs numpy, numba and safetensors only (STYLE: engine/ without PyTorch)."""
    import subprocess
    import sys
    from pathlib import Path

    directory = export_dir(random_model("egru", 0.5))
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from dualsparse.engine.runtime import Engine\n"
        f"print(Engine.load({str(directory)!r}).score([0, 1, 2, 3]).tolist())\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    expected = Engine.load(directory).score([0, 1, 2, 3])
    np.testing.assert_allclose(json.loads(done.stdout), expected, atol=1e-6)


def test_score_compare_with_the_pytorch_run(pruned_tiny_run, tiny_corpus_dir, tmp_path, capsys):
    """--compare runs the run's own PyTorch model: the float64 engine agrees with its float64
    model to rounding, with equal activity; the float32 engine within the 1e-4 tolerance."""
    run_dir, corpus = pruned_tiny_run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    test = str(tiny_corpus_dir / "test.txt")
    assert main(["score", str(out), test, "--json", "--float64", "--compare", str(run_dir)]) == 0
    captured = capsys.readouterr().out
    report = json.loads(captured[captured.index("{") :])["comparison"]
    assert report["pytorch_float64"]["max_abs_diff"] < 1e-10
    assert report["pytorch_float64"]["activity_max_abs_diff"] == 0.0
    assert main(["score", str(out), test, "--compare", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "PyTorch float64: max |Δ log p|" in text
    assert "0 tokens beyond 0.0001 (0.00%)" in text
