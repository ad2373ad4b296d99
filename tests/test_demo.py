"""The demo trains real models on the synthetic source and lands near its true perplexity."""

import json

import pytest

from dualsparse.demo import format_demo, run_demo

# Margins over the exact perplexity of the test text under the source: a reduced demo
# (80k training tokens, 8 epochs) measured EGRU ≈ 1.2x and the dense models ≈ 1.1x;
# a bigram model, the best without memory beyond one word, is ≈ 1.6x.
EGRU_MARGIN = 1.35
LSTM_MARGIN = 1.25


REDUCED = {
    "corpus_tokens": {"train": 80_000, "valid": 8_000, "test": 8_000},
    "epochs": 8,
    "minutes_per_model": 60.0,  # epochs bound the run, not the clock: same result anywhere
    "progress": False,
}


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), **REDUCED)


def test_trained_perplexity_is_within_margin_of_the_true_one(demo_report):
    true_ppl = demo_report["true_test_perplexity"]
    assert 30 < true_ppl < 50
    bigram = demo_report["source"]["bigram_perplexity"]
    egru, lstm = demo_report["models"]["egru"], demo_report["models"]["lstm"]
    assert egru["test_perplexity"] < EGRU_MARGIN * true_ppl
    assert lstm["test_perplexity"] < LSTM_MARGIN * true_ppl
    # both beat the best model that only looks one word back
    assert egru["test_perplexity"] < bigram and lstm["test_perplexity"] < bigram
    # nobody beats the source itself by more than sampling noise
    assert min(egru["test_perplexity"], lstm["test_perplexity"]) > 0.97 * true_ppl


def test_egru_is_sparse_and_lstm_dense(demo_report):
    egru, lstm = demo_report["models"]["egru"], demo_report["models"]["lstm"]
    assert all(0.0 < a < 0.6 for a in egru["layer_activity"])
    assert all(a > 0.99 for a in lstm["layer_activity"])


def test_demo_json_written_and_a_second_demo_reuses_the_finished_runs(demo_report):
    """Issue 15, point 12: the README's command run twice stopped with an error."""
    out = demo_report["corpus"].rsplit("/corpus", 1)[0]
    saved = json.loads(open(f"{out}/demo.json", encoding="utf-8").read())
    assert saved["true_test_perplexity"] == demo_report["true_test_perplexity"]
    assert [m["start"] for m in demo_report["models"].values()] == ["new", "new"]
    again = run_demo(out, **REDUCED)
    for name, first in demo_report["models"].items():
        second = again["models"][name]
        assert second["start"] == "reused"
        keys = ("test_perplexity", "best_valid_perplexity", "epochs", "train_seconds")
        assert [second[k] for k in keys] == [first[k] for k in keys]  # not trained again
    assert f"egru: reused the finished run in {out}/egru-seed0" in format_demo(again)


def test_a_demo_with_other_settings_starts_its_runs_over(tmp_path):
    small = {"corpus_tokens": {"train": 2_000, "valid": 300, "test": 300}, "progress": False}
    run_demo(tmp_path, epochs=1, **small)
    report = run_demo(tmp_path, epochs=2, **small)
    for name, model in report["models"].items():
        assert (model["start"], model["epochs"]) == ("started over", 2)
        metrics = (tmp_path / f"{name}-seed0" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]  # one run, not two
    assert "egru: started" in format_demo(report) and " over (its settings" in format_demo(report)
