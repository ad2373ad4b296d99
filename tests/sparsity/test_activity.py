"""Activity analysis (Fig. 4 / Fig. 5): counts checked against a token-by-token recount."""

import json
import sys

import numpy as np
import pytest
import torch

from dualsparse.cli import main
from dualsparse.config import RunConfig
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import evaluate
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.activity import (
    C_MINUS_THETA_BINS,
    analyze_activity,
    c_minus_theta_bin_counts,
    format_activity_table,
    histogram_quantiles,
    write_activity_outputs,
)
from dualsparse.training.loop import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(model_type: str = "egru") -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {
                "type": model_type,
                "emb_size": 16,
                "hidden_sizes": [16, 12],
                "threshold_init_mean": 0.05,
            },
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "bptt": 8,
                "eval_batch_size": 2,
                "weight_decay": 0.3,
                "bias_decay": 0.01,
                "log_interval": 1000,
            },
        }
    )


@pytest.fixture
def corpus(tiny_corpus_dir):
    return read_corpus(tiny_corpus_dir)


def tiny_model(corpus, model_type: str = "egru") -> LanguageModel:
    torch.manual_seed(3)
    return LanguageModel(tiny_config(model_type).model, len(corpus.vocab)).eval()


def recount_token_by_token(model: LanguageModel, tokens: torch.Tensor) -> list[list[int]]:
    """Nonzero outputs per unit, one token at a time with batch 1, counted in Python."""
    counts = [[0] * layer.hidden_size for layer in model.layers]
    state = None
    with torch.no_grad():
        for token in tokens[:-1].tolist():  # the last token is only a target
            out = model(torch.tensor([[token]]), state)
            state = out.state
            for k, y in enumerate(out.layer_outputs):
                for unit, value in enumerate(y[0, 0].tolist()):
                    counts[k][unit] += value != 0.0
    return counts


def test_layer_and_neuron_activity_match_a_token_by_token_recount(corpus):
    model = tiny_model(corpus)
    report = analyze_activity(model, corpus.valid, batch_size=1, bptt=5)
    expected = recount_token_by_token(model, corpus.valid)
    steps = len(corpus.valid) - 1
    assert report.tokens == steps
    for layer, counts in zip(report.layers, expected, strict=True):
        np.testing.assert_array_equal(layer.neuron_activity * steps, counts)
        assert layer.activity == pytest.approx(sum(counts) / (steps * layer.units))
        assert layer.dead_units == counts.count(0)
        assert layer.always_active_units == counts.count(steps)
    assert 0.0 < report.overall_activity < 1.0


def test_layer_activity_equals_evaluate_on_the_same_batches(corpus):
    model = tiny_model(corpus)
    report = analyze_activity(model, corpus.valid, batch_size=2, bptt=4)
    result = evaluate(model, corpus.valid, batch_size=2, bptt=4)
    assert [layer.activity for layer in report.layers] == result.layer_activity
    assert report.tokens == result.tokens


def test_c_minus_theta_mass_above_zero_is_the_activity_and_histograms_count_everything(corpus):
    report = analyze_activity(tiny_model(corpus), corpus.valid, batch_size=2, bptt=4)
    for layer in report.layers:
        dist = layer.c_minus_theta
        assert dist.fraction_above_zero == pytest.approx(layer.activity, abs=1e-12)
        assert dist.counts.sum() == layer.positions * layer.units
        assert dist.counts.shape == (C_MINUS_THETA_BINS,)
        assert dist.outside_range == 0
        q = dist.quantiles
        assert q["q0.001"] <= q["q0.5"] <= q["q0.999"]
        assert layer.neuron_hist_counts.sum() == layer.units
        assert layer.threshold_stats()["min"] <= layer.threshold_stats()["mean"]


def test_binning_and_quantiles_on_hand_made_values():
    counts, outside = c_minus_theta_bin_counts(torch.tensor([-3.0, -2.0, 0.0, 0.0049, 1.0, 5.0]))
    assert outside == 2  # -3 and 5; 1.0 is the closed upper edge of the last bin
    assert counts[0] == 2 and counts[-1] == 2 and counts[400] == 2 and counts.sum() == 6
    edges = np.array([0.0, 1.0, 2.0])
    quantiles = histogram_quantiles(np.array([1, 3]), edges, (0.25, 0.5, 1.0))
    assert quantiles == {"q0.25": 1.0, "q0.5": pytest.approx(4 / 3), "q1": 2.0}


def test_outputs_are_written_and_load_without_pickle(corpus, tmp_path):
    report = analyze_activity(tiny_model(corpus), corpus.valid, batch_size=2, bptt=4, split="valid")
    paths = write_activity_outputs(report, tmp_path / "out", tiny_config())
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert (data["weight_decay"], data["bias_decay"]) == (0.3, 0.01)
    layer1 = data["layers"][1]
    assert layer1["c_minus_theta"]["counts"] == report.layers[1].c_minus_theta.counts.tolist()
    with np.load(paths["npz"], allow_pickle=False) as arrays:
        np.testing.assert_array_equal(
            arrays["layer0_neuron_activity"], report.layers[0].neuron_activity
        )
        assert arrays["layer1_c_minus_theta_counts"].sum() == report.tokens * 12
    for stem in ("fig4_neuron_activity", "fig5_c_minus_theta"):
        png = (tmp_path / "out" / f"{stem}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
        assert "<svg" in (tmp_path / "out" / f"{stem}.svg").read_text(encoding="utf-8")
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_without_matplotlib_the_data_files_are_still_written(corpus, tmp_path, monkeypatch):
    report = analyze_activity(tiny_model(corpus), corpus.valid, batch_size=2, bptt=4)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(DualsparseError, match=r"pip install dualsparse\[plots\]"):
        write_activity_outputs(report, tmp_path)
    assert (tmp_path / "activity.json").is_file() and (tmp_path / "activity.npz").is_file()


def test_lstm_reports_activity_without_a_threshold_section(corpus, tmp_path):
    report = analyze_activity(
        tiny_model(corpus, "lstm"), corpus.valid, batch_size=2, bptt=4, config=tiny_config("lstm")
    )
    assert all(layer.c_minus_theta is None and layer.thresholds is None for layer in report.layers)
    assert "no threshold" in format_activity_table(report)
    paths = write_activity_outputs(report, tmp_path)
    assert "fig4_neuron_activity_png" in paths
    assert not (tmp_path / "fig5_c_minus_theta.png").exists()
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["has_threshold"] is False and data["layers"][0]["c_minus_theta"] is None


def test_cli_prints_json_and_writes_into_the_run(corpus, tiny_corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_config(), corpus, run_dir, progress=False)
    code = main(
        [
            "activity",
            str(run_dir),
            "--split",
            "valid",
            "--data",
            str(tiny_corpus_dir),
            "--json",
            "--no-plots",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert {
        "run",
        "checkpoint",
        "outputs",
        "layers",
        "overall_activity",
        "weight_decay",
        "bias_decay",
        "split",
        "tokens",
    } <= set(data)
    assert data["weight_decay"] == 0.3 and data["split"] == "valid"
    assert (run_dir / "activity-valid" / "activity.npz").is_file()
    assert (
        main(
            [
                "activity",
                str(run_dir),
                "--data",
                str(tiny_corpus_dir),
                "--out",
                str(tmp_path / "table"),
                "--no-plots",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "weight_decay   0.3" in table and "frac ĉ>θ" in table


def test_cli_bad_run_is_one_error_line(tmp_path, capsys):
    assert main(["activity", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
