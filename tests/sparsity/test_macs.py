"""MAC accounting against the paper's dense totals and against brute-force counting.

The brute force steps the model one token at a time (batch 1, one column of the
batchified split after another) and counts, with plain Python loops, every pair
(nonzero input j, nonzero weight W_ij) of every product, so it shares neither the
windowing nor the per-column counting of ``measure_macs``.
"""

import json

import pytest
import torch

from conftest import tiny_run_config
from dualsparse.cli import main
from dualsparse.config import ModelConfig
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.macs import (
    MacRow,
    column_nnz,
    dense_macs_per_token,
    event_macs,
    format_mac_table,
    measure_macs,
)
from dualsparse.training.loop import train

VOCAB = 20


def test_paper_dense_totals():
    awd = dense_macs_per_token("lstm", 400, [1150, 1150, 400])
    assert awd.totals("rnn")["dense_macs_per_token"] == 20_190_000
    assert awd.totals("full") is None  # no vocabulary, no head
    egru = dense_macs_per_token("egru", 750, [1350, 1350, 750])
    assert egru.totals("rnn")["dense_macs_per_token"] == 24_165_000


@pytest.mark.parametrize(
    "model_type, rows",
    [
        # emb 3, hidden [4, 2], vocab 7: W_ih [G·H, I], recurrent [G·H, H]; head below
        (
            "egru",
            {
                "layer0.W_ih": 12 * 3,
                "layer0.U_ur": 8 * 4,
                "layer0.U_z": 4 * 4,
                "layer1.W_ih": 6 * 4,
                "layer1.U_ur": 4 * 2,
                "layer1.U_z": 2 * 2,
            },
        ),
        (
            "gru",
            {
                "layer0.W_ih": 12 * 3,
                "layer0.W_hh": 12 * 4,
                "layer1.W_ih": 6 * 4,
                "layer1.W_hh": 6 * 2,
            },
        ),
        (
            "lstm",
            {
                "layer0.W_ih": 16 * 3,
                "layer0.W_hh": 16 * 4,
                "layer1.W_ih": 8 * 4,
                "layer1.W_hh": 8 * 2,
            },
        ),
    ],
)
def test_dense_rows_by_hand(model_type, rows):
    report = dense_macs_per_token(model_type, 3, [4, 2], vocab_size=7)
    head = {"projection": 3 * 2, "decoder": 7 * 3}  # projection [E, H_last], decoder [V, E]
    assert {r.name: r.dense_macs_per_token for r in report.rows} == {**rows, **head}
    assert report.totals("rnn")["dense_macs_per_token"] == sum(rows.values())
    assert report.totals("full")["dense_macs_per_token"] == sum(rows.values()) + 6 + 21
    tied = dense_macs_per_token(model_type, 2, [4, 2], vocab_size=7)  # last hidden = emb
    assert [r.name for r in tied.rows if not r.recurrent] == ["decoder"]


def test_event_macs_matches_loops_over_steps_and_columns():
    weight = torch.tensor(
        [
            [0.5, 0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 2.0, 1.0, 0.0],
            [0.3, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, -1.0, 1.0, 0.0],
        ]
    )
    active_values = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.2, 0.0],
            [0.0, 3.0, 0.0, 0.0, 1.0],
            [0.4, 0.1, -0.5, 0.7, 0.9],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.2, 0.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    assert column_nnz(weight).tolist() == [3, 0, 2, 3, 0]
    expected = 0
    for step in range(active_values.shape[0]):
        for j in range(weight.shape[1]):
            if active_values[step, j] != 0:
                expected += sum(1 for i in range(weight.shape[0]) if weight[i, j] != 0)
    assert expected == 3 + 3 + 0 + 3 + 2 + 3 + 0 + 2 + 3  # rows of the table above
    assert event_macs(active_values != 0, column_nnz(weight)) == expected


def test_row_estimate_and_exact_by_hand():
    # 2 tokens, columns with nnz [2, 1], only input 0 ever active: exact 2·2 = 4 MACs,
    # activity 2/4, density 3/4, estimate 0.5·0.75·4 = 1.5 MACs/token vs exact 2
    row = MacRow(
        "w", 2, 2, True, tokens=2, weight_nonzero=3, active_inputs=2, event_macs_total=4
    ).to_dict()
    assert row["activity"] == 0.5 and row["weight_density"] == 0.75
    assert row["estimated_macs_per_token"] == 1.5 and row["event_macs_per_token"] == 2.0
    assert row["exact_over_estimate"] == pytest.approx(4 / 3)


def tiny_lm(model_type: str, hidden: list[int], seed: int = 0) -> LanguageModel:
    """A width-8 model with about a third of its weights and some embedding entries zeroed."""
    torch.manual_seed(seed)
    model = LanguageModel(ModelConfig(type=model_type, emb_size=8, hidden_sizes=hidden), VOCAB)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in model.rnn_weight_names():
            weight = model.get_parameter(name)
            weight.mul_(torch.rand(weight.shape, generator=generator) > 0.35)
        model.layers[0].weight_ih[:, 1] = 0  # a dead input column
        model.layers[-1].weight_hh[:, 0] = 0  # a unit nobody listens to
        model.encoder.weight[:, 2] = 0  # embedding rows with zeros (and a dead decoder column)
        model.encoder.weight[3, :5] = 0
    return model.eval()


def count_pairs(weight: list[list[float]], values: list[float]) -> int:
    return sum(
        1 for j, a in enumerate(values) if a != 0 for i in range(len(weight)) if weight[i][j] != 0
    )


@torch.no_grad()
def brute_force_event_macs(model: LanguageModel, data: torch.Tensor, batch_size: int) -> dict:
    """Exact event MACs per product, stepping each column of the split token by token."""
    egru = model.cfg.type == "egru"
    layers = []
    for layer in model.layers:
        h, w_hh = layer.hidden_size, layer.weight_hh.tolist()
        recurrent = {"U_ur": w_hh[: 2 * h], "U_z": w_hh[2 * h :]} if egru else {"W_hh": w_hh}
        layers.append((layer.weight_ih.tolist(), recurrent))
    projection = model.projection.weight.tolist() if model.projection is not None else None
    decoder, embedding = model.decoder.weight.tolist(), model.encoder.weight.tolist()
    counts: dict[str, int] = {}

    def add(name, weight, values):
        counts[name] = counts.get(name, 0) + count_pairs(weight, values)

    steps = len(data) // batch_size
    for column in range(batch_size):
        tokens = data[column * steps : (column + 1) * steps].tolist()
        state, previous = None, [[0.0] * layer.hidden_size for layer in model.layers]
        for token in tokens[:-1]:  # the last token is only a target
            out = model(torch.tensor([[token]]), state)
            state = out.state
            x = embedding[token]
            for k, (w_ih, recurrent) in enumerate(layers):
                add(f"layer{k}.W_ih", w_ih, x)
                for name, weight in recurrent.items():
                    add(f"layer{k}.{name}", weight, previous[k])
                x = previous[k] = out.layer_outputs[k][0, 0].tolist()
            if projection is not None:
                add("projection", projection, x)
                x = [sum(p * v for p, v in zip(row, x, strict=True)) for row in projection]
            add("decoder", decoder, x)
    return counts


@pytest.mark.parametrize(
    "model_type, hidden",
    [
        ("egru", [6, 5]),  # projection 5 → 8
        ("egru", [6, 8]),  # tied decoder straight on the last layer
        ("lstm", [6, 5]),
        ("gru", [6, 5]),
    ],
)
def test_measure_macs_matches_brute_force(model_type, hidden):
    model = tiny_lm(model_type, hidden)
    data = torch.randint(0, VOCAB, (31,), generator=torch.Generator().manual_seed(1))
    report = measure_macs(model, data, batch_size=2, bptt=4)  # windows 4, 4, 4, 2
    assert report.tokens == 2 * 14
    expected = brute_force_event_macs(model, data, batch_size=2)
    assert {r.name: r.event_macs_total for r in report.rows} == expected
    assert report.totals("full")["event_macs_total"] == sum(expected.values())
    assert report.totals("rnn")["event_macs_total"] == sum(
        v for k, v in expected.items() if k.startswith("layer")
    )
    rows = {r.name: r.to_dict() for r in report.rows}
    if model_type == "egru":  # the test means something only if activity is really sparse
        assert 0.05 < rows["layer1.W_ih"]["activity"] < 0.95
        assert rows["layer0.U_ur"]["activity"] == rows["layer0.U_z"]["activity"]
    described = dense_macs_per_token(model_type, 8, hidden, VOCAB)
    assert [(r.name, r.dense_macs_per_token) for r in described.rows] == [
        (r.name, r.dense_macs_per_token) for r in report.rows
    ]
    json.dumps(report.to_dict(), allow_nan=False)
    assert "biases not counted" in format_mac_table(report)


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_dense_activity_makes_exact_equal_weight_sparse(model_type):
    model = tiny_lm(model_type, [6, 5])
    with torch.no_grad():
        model.encoder.weight.uniform_(0.1, 0.2)  # dense embedding rows
    data = torch.randint(0, VOCAB, (31,), generator=torch.Generator().manual_seed(2))
    report = measure_macs(model, data, batch_size=2, bptt=4)
    for row in report.rows:
        d = row.to_dict()
        assert (
            d["weight_sparse_macs_per_token"] < d["dense_macs_per_token"] or row.name == "decoder"
        )
        # the recurrent products read the zero initial state once per column
        steps = report.tokens - 2 if row.name.endswith("W_hh") else report.tokens
        assert row.event_macs_total == row.weight_nonzero * steps
        if not row.name.endswith("W_hh"):
            assert d["activity"] == 1.0 and d["exact_over_estimate"] == pytest.approx(1.0)


def test_all_zero_recurrent_weights():
    model = tiny_lm("egru", [6, 5])
    with torch.no_grad():
        for layer in model.layers:
            layer.weight_hh.zero_()
    data = torch.randint(0, VOCAB, (21,), generator=torch.Generator().manual_seed(3))
    report = measure_macs(model, data, batch_size=1, bptt=7)
    for row in report.rows:
        d = row.to_dict()
        if ".U_" in row.name:
            assert row.event_macs_total == 0 and d["weight_density"] == 0.0
            assert d["estimated_macs_per_token"] == 0.0 and d["exact_over_estimate"] is None
        else:
            assert row.event_macs_total > 0
    json.dumps(report.to_dict(), allow_nan=False)
    format_mac_table(report)


def test_measure_macs_rejects_bad_windows():
    model = tiny_lm("gru", [6, 5])
    with pytest.raises(DualsparseError, match="bptt"):
        measure_macs(model, torch.arange(10), bptt=0)
    with pytest.raises(DualsparseError, match="batch"):
        measure_macs(model, torch.arange(10), batch_size=20)


def test_cli_json_for_a_run_and_for_a_described_model(tiny_corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_run_config(), read_corpus(tiny_corpus_dir), run_dir, progress=False)
    capsys.readouterr()
    assert (
        main(["macs", str(run_dir), "--data", str(tiny_corpus_dir), "--bptt", "8", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {
        "run",
        "checkpoint",
        "split",
        "batch_size",
        "bptt",
        "model_type",
        "tokens",
        "rows",
        "totals",
        "note",
    } <= set(out)
    assert out["split"] == "test" and out["batch_size"] == 1 and out["tokens"] == 32
    assert "biases not counted" in out["note"]
    assert {
        "name",
        "shape",
        "dense_macs_per_token",
        "weight_density",
        "activity",
        "estimated_macs_per_token",
        "event_macs_per_token",
        "event_macs_total",
        "exact_over_estimate",
    } <= set(out["rows"][0])
    # emb 16, hidden [16, 12]: a projection 12 → 16 before the tied decoder
    assert [r["name"] for r in out["rows"]][-3:] == ["layer1.U_z", "projection", "decoder"]
    assert set(out["totals"]) == {"rnn", "full"}

    assert (
        main(["macs", "--model", "lstm", "--emb", "400", "--hidden", "1150,1150,400", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["rnn"]["dense_macs_per_token"] == 20_190_000
    assert out["measured"] is False and out["totals"]["full"] is None
    assert main(["macs", "--model", "egru", "--emb", "750", "--hidden", "1350,1350,750"]) == 0
    assert "24.1650" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give RUN"),
        (["somewhere", "--model", "egru"], "not both"),
        (["--model", "egru", "--emb", "8"], "give RUN"),
        (["--model", "egru", "--emb", "x", "--hidden", "8"], "--emb"),
        (["--model", "egru", "--emb", "8", "--hidden", "8,,4"], "--hidden"),
        (["--model", "egru", "--emb", "8", "--hidden", "8,-4"], "--hidden"),
        (["--model", "egru", "--emb", "8", "--hidden", "8", "--vocab", "0"], "--vocab"),
        (["--model", "rnn", "--emb", "8", "--hidden", "8"], "rnn"),
    ],
)
def test_cli_errors(argv, message, capsys):
    assert main(["macs", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_error_for_a_missing_run(tmp_path, capsys):
    assert main(["macs", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
