"""engine.score: the score summary of a text, without the command line."""

import math

import numpy as np
import pytest
from engine_helpers import export_fixture, random_model

from dualsparse.engine.compare import torch_log_probs
from dualsparse.engine.runtime import Engine
from dualsparse.engine.score import format_score, score_file, score_text
from dualsparse.errors import DualsparseError

TEXT = "w1 w2 w3\nw4 zzz\nw5 w6\n"  # zzz is not in the vocabulary
TOKENS = ["w1", "w2", "w3", "<eos>", "w4", "zzz", "<eos>", "w5", "w6", "<eos>"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = random_model("egru", 0.5)
    return model, export_fixture(tmp_path_factory.mktemp("score"))(model)


def test_summary_is_the_perplexity_of_the_models_log_probs(exported):
    model, path = exported
    engine = Engine.load(path)
    score = score_text(engine, TEXT, model="M", file="F")
    ids = [engine.token_id("<unk>" if word == "zzz" else word) for word in TOKENS]
    # the same text through the PyTorch model, then the perplexity by hand
    reference = torch_log_probs(model, np.array(ids), "float64")[0]
    nll = -sum(reference) / len(reference)
    s = score.summary
    assert (s["model"], s["file"], s["tokens_scored"], s["unknown_words"]) == ("M", "F", 9, 1)
    assert score.words == TOKENS
    np.testing.assert_allclose(score.log_probs, reference, atol=1e-4)
    assert s["loss"] == pytest.approx(nll, abs=1e-5)
    assert s["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert len(s["layer_activity"]) == 2 and all(0 <= a <= 1 for a in s["layer_activity"])
    assert 0 < s["event_macs_per_token"]["rnn"] < s["event_macs_per_token"]["full"]


def test_score_file_reads_the_text_and_prints_one_line_per_token(exported, tmp_path):
    _, path = exported
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    score = score_file(path, text, float64=True)
    assert (score.summary["model"], score.summary["file"]) == (str(path), str(text))
    assert score.to_dict()["log_probs"] == score.log_probs.tolist()
    lines = format_score(score, per_token=True).splitlines()
    assert lines[:2] == [
        f"1\tw2\t{score.log_probs[0]:.6f}",
        f"2\tw3\t{score.log_probs[1]:.6f}",
    ]
    assert lines[9] == (
        f"{text}: 9 tokens scored (1 unknown words as <unk>), "
        f"perplexity {score.summary['perplexity']:.2f}"
    )


def test_too_short_or_unreadable_text_is_a_user_error(exported, tmp_path):
    _, path = exported
    with pytest.raises(DualsparseError, match="fewer than two tokens"):
        score_text(Engine.load(path), "", file="empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DualsparseError, match="give a UTF-8 text file"):
        score_file(path, tmp_path / "latin1.txt")
