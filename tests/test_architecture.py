"""The description of a model's products against the paper's totals (by hand) and against
the parameters of real PyTorch models."""

import pytest
import torch

from dualsparse.architecture import (
    EGRU_RESET_AFTER,
    GATES,
    INPUT,
    PREVIOUS_OUTPUT,
    RESET_GATED,
    Architecture,
)
from dualsparse.config import ModelConfig
from dualsparse.models.lm import LanguageModel


def test_dense_macs_are_the_papers_totals():
    # AWD-LSTM, emb 400, hidden 1150,1150,400: 4H·I + 4H·H per layer
    awd = Architecture("lstm", 400, [1150, 1150, 400], 10_000)
    layers = [
        4 * 1150 * 400 + 4 * 1150 * 1150,  # 7,130,000
        4 * 1150 * 1150 + 4 * 1150 * 1150,  # 10,580,000
        4 * 400 * 1150 + 4 * 400 * 400,  # 2,480,000
    ]
    assert sum(layers) == 20_190_000
    assert awd.dense_macs_per_token("rnn") == 20_190_000
    # last layer = emb: no projection, decoder [V, 400]
    assert awd.dense_macs_per_token("full") == 20_190_000 + 10_000 * 400
    # EGRU, emb 750, hidden 1350,1350,750: 3H·I + 3H·H per layer (U_ur 2H + U_z H rows)
    egru = Architecture("egru", 750, [1350, 1350, 750], 10_000)
    assert egru.dense_macs_per_token("rnn") == (
        3 * 1350 * (750 + 1350) + 3 * 1350 * (1350 + 1350) + 3 * 750 * (1350 + 750)
    )
    assert egru.dense_macs_per_token("rnn") == 24_165_000
    assert egru.dense_macs_per_token("full") == 24_165_000 + 7_500_000
    assert Architecture("egru", 750, [1350, 1350, 750]).head_products() == []


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("hidden_sizes", [[6, 4], [6, 5]])  # last = emb 5: no projection
@pytest.mark.parametrize(
    "model_type, reset_after", [("egru", False), ("egru", True), ("lstm", False), ("gru", False)]
)
def test_products_and_tensors_are_the_models_parameters(
    model_type, reset_after, hidden_sizes, tie_weights
):
    """Every product is a row slice of a real model's parameter with its shape; a layer's
    recurrent products tile weight_hh exactly; products and dense tensors together cover
    every parameter of the model (the reset-after EGRU's bias_hz too)."""
    cfg = ModelConfig(
        type=model_type,
        emb_size=5,
        hidden_sizes=hidden_sizes,
        tie_weights=tie_weights,
        reset_after=reset_after,
    )
    model = LanguageModel(cfg, 13)
    arch = Architecture.of(model)
    assert arch.reset_after == reset_after
    assert arch.projection == (model.projection is not None)
    covered = set()
    for product in arch.products():
        weight = model.get_parameter(product.weight)
        rows = weight[product.row_start : product.row_start + product.rows]
        assert tuple(rows.shape) == (product.rows, product.cols), product.name
        covered.add(weight)
    for layer, torch_layer in enumerate(model.layers):
        recurrent = arch.layer_products(layer)[1:]
        starts = [p.row_start for p in recurrent]
        stops = [p.row_start + p.rows for p in recurrent]
        assert starts[0] == 0 and starts[1:] == stops[:-1]
        assert (
            stops[-1] == torch_layer.weight_hh.shape[0] == GATES[model_type] * hidden_sizes[layer]
        )
    for name, (param, shape) in arch.dense_tensors().items():
        weight = model.get_parameter(param)
        assert tuple(weight.shape) == shape, name
        covered.add(weight)
    assert {id(p) for p in covered} == {id(p) for p in model.parameters()}


def test_egru_products_read_what_the_model_reads():
    """One EGRU step assembled from the description alone (each product's weight rows times
    the input it ``reads``, added at its rows) equals the model's step: U_z must read
    r ⊙ y_{t−1}, not y_{t−1}, for the states to agree."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(type="egru", emb_size=5, hidden_sizes=[6]), 13).double()
    model.eval()
    layer, hidden = model.layers[0], 6
    with torch.no_grad():
        layer.threshold.fill_(0.0)  # about half the units fire
        first = model(torch.tensor([[3]]))
        c_prev, y_prev = (s[0] for s in first.state[0])
        expected = model(torch.tensor([[7]]), first.state).layer_outputs[0][0, 0]
        assert 0 < int((y_prev != 0).sum()) < hidden
        gates = layer.bias.clone()
        inputs = {INPUT: model.encoder.weight[7], PREVIOUS_OUTPUT: y_prev}
        products = Architecture.of(model).layer_products(0)
        for product in sorted(products, key=lambda p: p.reads == RESET_GATED):
            if product.reads == RESET_GATED:  # needs r, complete once the others are added
                inputs[RESET_GATED] = torch.sigmoid(gates[hidden : 2 * hidden]) * y_prev
            weight = model.get_parameter(product.weight)
            rows = slice(product.row_start, product.row_start + product.rows)
            gates[rows] += weight[rows] @ inputs[product.reads]
        u, z = torch.sigmoid(gates[:hidden]), torch.tanh(gates[2 * hidden :])
        c_pre = c_prev + u * (z - c_prev)
        step = torch.where(c_pre > layer.threshold, c_pre, 0.0)
    torch.testing.assert_close(step, expected, atol=1e-12, rtol=0)


def test_reset_after_products_read_what_the_model_reads():
    """The reset-after EGRU (``EGRU_RESET_AFTER``): U_z reads y_{t−1} itself, and the step
    assembled from the description, z = tanh(W_z x + b_z + r ⊙ (U_z·y + b_hz)), equals the
    model's; the products keep the paper cell's names and shapes."""
    torch.manual_seed(0)
    cfg = ModelConfig(type="egru", emb_size=5, hidden_sizes=[6], reset_after=True)
    model = LanguageModel(cfg, 13).double().eval()
    layer, hidden = model.layers[0], 6
    arch = Architecture.of(model)
    assert arch.cell is EGRU_RESET_AFTER
    paper = Architecture("egru", 5, [6], 13)
    assert [(p.name, p.rows, p.cols) for p in arch.products()] == [
        (p.name, p.rows, p.cols) for p in paper.products()
    ]
    assert [p.reads for p in arch.layer_products(0)] == [INPUT, PREVIOUS_OUTPUT, PREVIOUS_OUTPUT]
    with torch.no_grad():
        layer.threshold.fill_(0.0)
        first = model(torch.tensor([[3]]))
        c_prev, y_prev = (s[0] for s in first.state[0])
        expected = model(torch.tensor([[7]]), first.state).layer_outputs[0][0, 0]
        gates = layer.bias.clone()
        rec_z = layer.bias_hz.clone()
        inputs = {INPUT: model.encoder.weight[7], PREVIOUS_OUTPUT: y_prev}
        for product in arch.layer_products(0):
            weight = model.get_parameter(product.weight)
            rows = slice(product.row_start, product.row_start + product.rows)
            term = weight[rows] @ inputs[product.reads]
            if product.name.endswith("U_z"):
                rec_z += term
            else:
                gates[rows] += term
        u, r = torch.sigmoid(gates[:hidden]), torch.sigmoid(gates[hidden : 2 * hidden])
        z = torch.tanh(gates[2 * hidden :] + r * rec_z)
        c_pre = c_prev + u * (z - c_prev)
        step = torch.where(c_pre > layer.threshold, c_pre, 0.0)
    assert 0 < int((step != 0).sum()) < hidden
    torch.testing.assert_close(step, expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reset_after is an EGRU option"):
        Architecture("lstm", 5, [6], reset_after=True)


def test_unknown_cell_type_is_refused():
    with pytest.raises(ValueError, match="not one of egru, lstm, gru"):
        Architecture("rnn", 3, [4])
