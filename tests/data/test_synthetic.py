import dataclasses
import json
import math

import numpy as np
import pytest

from dualsparse.data.synthetic import (
    EOS,
    SourceSpec,
    SyntheticSource,
    split_seed,
    write_corpus,
)
from dualsparse.errors import DualsparseError

# Small enough to reason about by hand, big enough to have every kind of state.
TINY = SourceSpec(
    vocab_size=14, n_topics=2, markers_per_topic=2, n_classes=3, eos_prob=0.25, seed=3
)


def zipf_entropy(n: int, exponent: float) -> float:
    weights = [r**-exponent for r in range(1, n + 1)]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


def binary_entropy(q: float) -> float:
    return -q * math.log(q) - (1 - q) * math.log(1 - q)


def read_ptb(path) -> list[str]:
    """The dualsparse reader's convention: each line's words, then <eos>."""
    tokens = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens += line.split() + [EOS]
    return tokens


def test_same_seed_same_source_and_stream():
    a, b = SyntheticSource(TINY), SyntheticSource(TINY)
    np.testing.assert_array_equal(a.next_token_probs, b.next_token_probs)
    assert a.sample(500, seed=7) == b.sample(500, seed=7)
    assert a.sample(500, seed=7) != a.sample(500, seed=8)
    other = SyntheticSource(dataclasses.replace(TINY, seed=4))
    assert not np.array_equal(a.next_token_probs, other.next_token_probs)


def test_end_at_eos_extends_the_same_stream():
    source = SyntheticSource(TINY)
    plain = source.sample(101, seed=1)
    whole = source.sample(101, seed=1, end_at_eos=True)
    assert whole[:101] == plain
    assert whole[-1] == EOS and EOS not in whole[101:-1]


@pytest.mark.parametrize("spec", [TINY, SourceSpec()], ids=["tiny", "default"])
def test_every_state_is_a_distribution_and_pi_is_stationary(spec):
    source = SyntheticSource(spec)
    probs = source.next_token_probs
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    pi = source.stationary
    moved = np.zeros_like(pi)
    for s, row in enumerate(probs):
        np.add.at(moved, source.next_state[s], pi[s] * row)
    np.testing.assert_allclose(moved, pi, atol=1e-12)
    assert pi.sum() == pytest.approx(1.0)


def filtered_log_probs(source: SyntheticSource, tokens: list[str]) -> list[float]:
    """Re-derive p(x_t | x_<t) from the generative story (module docstring, eq. 1-4)
    by the forward algorithm over the topic, treated as hidden: nothing here uses
    the automaton tables that ``log_prob`` reads."""
    ids = {w: i for i, w in enumerate(source.vocabulary())}
    n_topics, q = source.spec.n_topics, source.spec.eos_prob
    # G is doubly stochastic, so every topic is equally frequent among sentences.
    belief = [1.0 / n_topics] * n_topics
    previous = EOS
    out = []
    for token in tokens:
        x = ids[token]
        likelihood = []  # p(x_t, topic of x_t's sentence = z | x_<t), up to the belief
        if previous == EOS:  # a new sentence: switch topic, then emit a marker
            for z_new in range(n_topics):
                switch = sum(belief[z] * source.topic_switch[z, z_new] for z in range(n_topics))
                likelihood.append(switch * source.marker_probs[z_new, x])
        else:
            prev_class = source.word_class[ids[previous]]
            row = 0 if prev_class < 0 else 1 + prev_class
            for z in range(n_topics):
                if x == source.eos_id:
                    p = q if prev_class >= 0 else 0.0
                elif source.word_class[x] >= 0:
                    go_on = 1 - q if prev_class >= 0 else 1.0
                    c = source.word_class[x]
                    p = go_on * source.class_transition[z, row, c] * source.emission[z, c, x]
                else:
                    p = 0.0
                likelihood.append(belief[z] * p)
        total = sum(likelihood)
        out.append(math.log(total))
        belief = [weight / total for weight in likelihood]
        previous = token
    return out


def test_log_prob_equals_forward_filter_over_hidden_topic():
    source = SyntheticSource(TINY)
    tokens = source.sample(400, seed=11)
    np.testing.assert_allclose(source.log_prob(tokens), filtered_log_probs(source, tokens))


def test_impossible_tokens_get_minus_inf():
    source = SyntheticSource(TINY)
    marker = source.vocabulary()[int(np.flatnonzero(source.marker_topic >= 0)[0])]
    log_p = source.log_prob([EOS, marker, marker])  # a stream must open with a marker
    assert log_p[0] == -np.inf and log_p[2] == -np.inf


def test_entropy_rate_matches_monte_carlo():
    source = SyntheticSource(SourceSpec())
    n_tokens, batch = 200_000, 4_000
    nll = -source.log_prob(source.sample(n_tokens, seed=2024))
    # Tokens are dependent only through the state chain: a sentence (~14 tokens)
    # and the topic memory 1 / (1 - rho) = 5 sentences, i.e. ~70 tokens, far below
    # the 4k-token batches, whose means are therefore close to independent. Their
    # spread gives the standard error; 5 of them would be missed by chance with
    # probability < 1e-6.
    batch_means = nll.reshape(-1, batch).mean(axis=1)
    standard_error = batch_means.std(ddof=1) / math.sqrt(len(batch_means))
    assert standard_error < 0.01  # guards the test against a vacuous tolerance
    assert abs(nll.mean() - source.entropy_rate()) < 5 * standard_error


def test_entropy_rate_of_the_one_topic_one_class_source_by_hand():
    # One topic, one marker, one class: sentences are "marker w w ... w <eos>" with
    # i.i.d. Zipf words and a geometric number N of them (E[N] = 1/q). Per sentence
    # the entropy is E[N] * (H_zipf + h(q)) over E[N] + 2 tokens (renewal reward):
    # H = (H_zipf + h(q)) / (1 + 2q).
    q, s, vocab_size = 0.2, 1.3, 30
    spec = SourceSpec(
        vocab_size=vocab_size,
        n_topics=1,
        markers_per_topic=1,
        n_classes=1,
        zipf_exponent=s,
        eos_prob=q,
    )
    source = SyntheticSource(spec)
    n_content = vocab_size - 2
    expected = (zipf_entropy(n_content, s) + binary_entropy(q)) / (1 + 2 * q)
    assert source.entropy_rate() == pytest.approx(expected, rel=1e-12)
    # The words form a first-order Markov chain here, so a bigram model is optimal.
    assert source.bigram_entropy() == pytest.approx(expected, rel=1e-12)
    # Unigram frequencies: <eos> and the marker once per sentence, content word of
    # rank r with Zipf probability p_r times E[N], all over (1 + 2q) / q tokens.
    weights = np.arange(1, n_content + 1, dtype=float) ** -s
    freqs = np.concatenate([[q, q], weights / weights.sum()]) / (1 + 2 * q)
    assert source.unigram_entropy() == pytest.approx(-(freqs * np.log(freqs)).sum(), rel=1e-12)


def test_unigram_and_bigram_models_are_worse_than_the_source():
    source = SyntheticSource(SourceSpec())
    assert source.unigram_entropy() > source.bigram_entropy() > source.entropy_rate() + 0.2


def test_write_corpus_files_read_back_as_the_sampled_streams(tmp_path):
    sizes = {"train": 3000, "valid": 800, "test": 700}
    summary = write_corpus(tmp_path, TINY, sizes["train"], sizes["valid"], sizes["test"])
    source = SyntheticSource(TINY)
    for index, name in enumerate(("train", "valid", "test")):
        expected = source.sample(sizes[name], split_seed(TINY, index), end_at_eos=True)
        assert read_ptb(tmp_path / f"{name}.txt") == expected
        nll = -source.log_prob(expected).mean()
        assert summary[name]["tokens"] == len(expected) >= sizes[name]
        assert summary[name]["nll_nats_per_token"] == pytest.approx(nll, rel=1e-12)
        assert summary[name]["perplexity"] == pytest.approx(math.exp(nll), rel=1e-12)
    assert summary["entropy_rate_nats"] == pytest.approx(source.entropy_rate())
    assert summary["entropy_rate_perplexity"] == pytest.approx(math.exp(source.entropy_rate()))
    assert json.loads((tmp_path / "source.json").read_text()) == summary
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "source.json",
        "test.txt",
        "train.txt",
        "valid.txt",
    ]


def test_splits_are_different_streams(tmp_path):
    write_corpus(tmp_path, TINY, 500, 500, 500)
    texts = {(tmp_path / f"{n}.txt").read_text() for n in ("train", "valid", "test")}
    assert len(texts) == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"vocab_size": 10, "n_topics": 3, "markers_per_topic": 3},
        {"eos_prob": 0.0},
        {"topic_stickiness": 1.0},
        {"class_concentration": 0.0},
    ],
)
def test_invalid_spec_is_a_user_error(bad):
    with pytest.raises(DualsparseError, match="invalid synthetic source spec"):
        SourceSpec(**bad)


def test_user_errors(tmp_path):
    source = SyntheticSource(TINY)
    with pytest.raises(DualsparseError, match="not words of this synthetic source"):
        source.log_prob(["the", "cat"])
    with pytest.raises(DualsparseError, match="at least 1"):
        source.sample(0, seed=0)
    with pytest.raises(DualsparseError, match="must be >= 1 token"):
        write_corpus(tmp_path, TINY, 100, 0, 100)
