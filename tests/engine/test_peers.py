"""The peer runtimes of the benchmark compute the model's log-probabilities: ONNX Runtime
and OpenVINO on the exported step of a dense model, torch sparse CSR on a pruned one.
Each skips with a reason when its runtime is not installed (pip install 'dualsparse[peers]')."""

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import export_fixture, random_model

from dualsparse.engine import peer_graphs, peers
from dualsparse.engine.dense_baselines import DenseStepper
from dualsparse.engine.export import load_export

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 1]
HIDDEN = [7, 6]  # emb 5: the last layer needs a projection


def _needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} not installed (pip install 'dualsparse[peers]')")


def _reference(stepper: DenseStepper) -> np.ndarray:
    stepper.reset()
    with torch.no_grad():
        out = np.stack([stepper.log_probs(t).numpy() for t in TOKENS])
    stepper.reset()
    return out


@pytest.fixture(scope="module", params=["lstm", "gru", "egru"])
def exported(request, tmp_path_factory):
    """(stepper, reference log-probs, graphs, state shapes) per table choice; under
    ("fused", table) the graphs with ONNX's LSTM / GRU operator (not for an EGRU)."""
    _needs("onnx")
    out = {}
    for table in (False, True):
        stepper = DenseStepper(request.param, 5, HIDDEN, 11, seed=2, input_table=table)
        if request.param == "egru":  # thresholds that let units both fire and rest
            for layer in stepper.layers:
                layer["threshold"].fill_(0.05)
        folder = tmp_path_factory.mktemp(f"{request.param}-{table}")
        graphs = {
            part: peer_graphs.export_onnx(stepper, folder / f"{part}.onnx", part == "full")
            for part in ("rnn", "full")
        }
        shapes = peer_graphs.state_shapes(request.param, HIDDEN)
        out[table] = (stepper, _reference(stepper), graphs, shapes)
        if request.param in peer_graphs.FUSED_OPS:
            out["fused", table] = {
                part: peer_graphs.export_onnx(
                    stepper, folder / f"fused-{part}.onnx", part == "full", True
                )
                for part in ("rnn", "full")
            }
    return out


def _check(peer, reference: np.ndarray) -> None:
    got = np.stack([np.array(peer.log_probs(t)) for t in TOKENS])
    np.testing.assert_allclose(got, reference, atol=peers.PEER_TOLERANCE, rtol=0)
    # the state is carried: the same token (1) at positions 1, 3 and 10 gives other outputs
    assert np.abs(reference[1] - reference[3]).max() > 1e-3
    peer.reset()
    np.testing.assert_allclose(np.array(peer.log_probs(TOKENS[0])), reference[0], atol=1e-4)


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("io_binding", [False, True])
def test_onnx_runtime_computes_the_dense_models_log_probs(exported, table, io_binding):
    _needs("onnxruntime")
    _, reference, graphs, shapes = exported[table]
    _check(peers.OrtStepper(graphs, shapes, 1, io_binding), reference)


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("io_binding", [False, True])
def test_onnx_runtime_fused_operator_computes_the_dense_models_log_probs(
    exported, table, io_binding
):
    """ONNX's LSTM / GRU operator (its gate order and bias layout differ from PyTorch's)
    against the addmv stepper; every layer is one such node, but a first layer fed by the
    table, which keeps the plain form."""
    _needs("onnxruntime")
    stepper, reference, _, shapes = exported[table]
    if stepper.model_type not in peer_graphs.FUSED_OPS:
        with pytest.raises(ValueError, match="no operator"):
            peer_graphs.export_onnx(stepper, Path("unused.onnx"), False, fused=True)
        return
    onnx = pytest.importorskip("onnx")
    graphs = exported["fused", table]
    op = peer_graphs.FUSED_OPS[stepper.model_type]
    for path in graphs.values():
        ops = [node.op_type for node in onnx.load(path).graph.node]
        assert ops.count(op) == len(HIDDEN) - int(table)
        assert ("Sigmoid" in ops) == table  # the plain first layer's gates
    _check(peers.OrtStepper(graphs, shapes, 1, io_binding), reference)


@pytest.mark.parametrize("table", [False, True])
def test_openvino_computes_the_dense_models_log_probs(exported, table):
    _needs("openvino")
    _, reference, graphs, shapes = exported[table]
    _check(peers.OpenVinoStepper(graphs, shapes, 1), reference)


def test_onnx_rnn_graph_carries_the_state_the_full_graph_reads(exported):
    """step_rnn (the RNN-only graph) then step (the full graph) = the stepper doing both."""
    _needs("onnxruntime")
    stepper, _, graphs, shapes = exported[False]
    peer = peers.OrtStepper(graphs, shapes, 1, True)
    stepper.reset()
    with torch.no_grad():
        for token in TOKENS[:4]:
            peer.step_rnn(token)
            stepper.step_rnn(token)
        expected = stepper.log_probs(TOKENS[4]).numpy()
    stepper.reset()
    np.testing.assert_allclose(np.array(peer.log_probs(TOKENS[4])), expected, atol=1e-4)


@pytest.mark.parametrize("model_type", ["lstm", "gru", "egru"])
@pytest.mark.parametrize("table", [False, True])
def test_sparse_csr_computes_the_pruned_models_log_probs(tmp_path, model_type, table):
    """torch sparse CSR on the export of a pruned model against the PyTorch LanguageModel
    it was exported from (its own sequence code, dense weights with zeros)."""
    torch_model = random_model(model_type, 0.8)
    model = load_export(export_fixture(tmp_path)(torch_model))
    with torch.no_grad():
        logits = torch_model(torch.tensor(TOKENS).view(-1, 1)).logits[:, 0]
    expected = torch.log_softmax(logits, -1).numpy()
    stepper = peers.SparseCsrStepper(model, table)
    with torch.no_grad():
        got = np.stack([stepper.log_probs(t) for t in TOKENS])
    np.testing.assert_allclose(got, expected, atol=peers.PEER_TOLERANCE, rtol=0)
    assert stepper.layers[0][0].layout == torch.sparse_csr
    # int32 indices, as MKL's routines take them (with int64 each product copies them)
    matrices = [m for w_ih, _, parts, _ in stepper.layers for m in (w_ih, *parts.values())]
    for m in matrices + ([stepper.projection] if stepper.projection is not None else []):
        assert m.crow_indices().dtype == m.col_indices().dtype == torch.int32


@pytest.mark.parametrize("model_type", ["lstm", "gru", "egru"])
def test_peer_rows_add_the_fused_operator_rows_and_each_passes_the_check(tmp_path, model_type):
    """peers_rows on a tiny dense model: ONNX Runtime on both graph forms for an LSTM or GRU
    (the plain one alone for an EGRU), OpenVINO on the plain one, each with and without the
    table; every row reproduces the stepper's log-probabilities (the bench's check)."""
    _needs("onnxruntime")
    _needs("openvino")
    from dualsparse.engine.bench import _max_log_prob_diff
    from dualsparse.engine.bench_table import Contender
    from dualsparse.engine.peers_rows import peer_contenders

    stepper = DenseStepper(model_type, 5, HIDDEN, 11, seed=2)
    runs = f"dense {model_type.upper()} (model size)"
    dense = Contender(runs, "PyTorch addmv", runs, False, lambda _: stepper, lambda _: (1, 1))
    model = load_export(export_fixture(tmp_path)(random_model(model_type, 0.5)))
    rows, skipped = peer_contenders(model, [dense], tmp_path, ("ONNX Runtime", "OpenVINO"))
    assert skipped == {}
    labels = ["ORT", "ORT iobind", "OpenVINO"]
    if model_type != "egru":
        op = model_type.upper()
        labels += [f"ORT {op} op", f"ORT {op} op iobind"]
    expected = {f"{label} {runs}{suffix}" for label in labels for suffix in ("", ", table")}
    assert {row.name for row in rows} == expected
    for row in rows:
        assert _max_log_prob_diff(row.build(1), row.reference, TOKENS) <= peers.PEER_TOLERANCE
        assert ("operator" in row.runtime) == (" op" in row.name)
