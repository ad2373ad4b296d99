"""Global magnitude pruning: the threshold, the budget, and pruned weights staying zero."""

import copy
import json
import os
import signal

import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from dualsparse.cli import main
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError
from dualsparse.models.lm import LanguageModel
from dualsparse.runs import load_run
from dualsparse.sparsity.masks import apply_masks, global_magnitude_masks, sparsity_report
from dualsparse.sparsity.prune import prune_run, target_schedule
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.loop import Trainer, train


def test_global_threshold_matches_a_direct_sort():
    rng = np.random.default_rng(0)
    mats = {
        "a": rng.normal(size=(7, 5)),
        "b": rng.normal(size=(3, 11)) * 3,
        "c": rng.normal(size=9),
    }
    weights = {k: torch.tensor(v, dtype=torch.float32) for k, v in mats.items()}
    everything = np.concatenate([np.abs(v).ravel() for v in mats.values()]).astype(np.float32)
    for sparsity in (0.0, 0.1, 0.5, 0.85, 0.99):
        masks = global_magnitude_masks(weights, sparsity)
        n_prune = int(round(sparsity * everything.size))
        cut = np.sort(everything)[n_prune - 1] if n_prune else -1.0
        pruned = sum(int((~m).sum()) for m in masks.values())
        assert pruned == n_prune
        for name, m in masks.items():
            mags = np.abs(mats[name]).astype(np.float32)
            # every pruned entry is at most the cut, every kept one at least it
            assert (mags[~m.numpy()] <= cut).all()
            assert (mags[m.numpy()] >= cut).all()


def test_budget_is_global_not_per_matrix():
    big = torch.full((10,), 5.0)
    small = torch.full((10,), 0.1)
    masks = global_magnitude_masks({"big": big, "small": small}, 0.5)
    assert masks["big"].all() and not masks["small"].any()


def test_tied_weight_listed_twice_is_refused():
    w = torch.randn(4, 4)
    with pytest.raises(ValueError, match="twice"):
        global_magnitude_masks({"encoder.weight": w, "decoder.weight": w}, 0.5)


def test_pruning_more_never_revives_a_pruned_weight():
    w = torch.randn(50)
    first = global_magnitude_masks({"w": w}, 0.4)["w"]
    second = global_magnitude_masks({"w": w * first}, 0.7)["w"]
    assert not (second & ~first).any()


def test_schedule_is_geometric_in_density():
    s = target_schedule(0.875, 3)
    np.testing.assert_allclose([1 - x for x in s], [0.5, 0.25, 0.125])
    assert target_schedule(0.6, 1) == pytest.approx([0.6])
    np.testing.assert_allclose(target_schedule(0.9, 2, start_sparsity=0.6)[-1], 0.9)
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(DualsparseError, match=r"\[0, 1\)"):
            target_schedule(bad, 2)


def _model(**model):
    torch.manual_seed(0)
    return LanguageModel(tiny_run_config(model).model, vocab_size=30)


def test_rnn_weights_exclude_embedding_and_biases():
    model = _model(hidden_sizes=[16, 12])
    names = model.rnn_weight_names()
    assert "encoder.weight" not in names and "decoder.weight" not in names
    assert "projection.weight" in names
    assert all(n.endswith(("weight_ih", "weight_hh", "projection.weight")) for n in names)


def test_pruned_weights_stay_zero_through_training_steps(tiny_corpus_dir, tmp_path):
    corpus = read_corpus(tiny_corpus_dir)
    cfg = tiny_run_config(epochs=2, weight_decay=0.5)
    model = LanguageModel(cfg.model, len(corpus.vocab))
    names = model.rnn_weight_names()
    params = dict(model.named_parameters())
    masks = global_magnitude_masks({n: params[n] for n in names}, 0.7)
    embedding_before = model.encoder.weight.detach().clone()
    trainer = Trainer(
        cfg, corpus, tmp_path / "run", progress=False, initial_model=model, masks=masks
    )
    trainer.run()
    trained = dict(trainer.model.named_parameters())
    for name, mask in masks.items():
        assert (trained[name][~mask] == 0).all(), name
        assert (trained[name][mask] != 0).all(), name  # the others did train
    # the embedding is never pruned (it trains, and has no zeros)
    assert not torch.equal(trainer.model.encoder.weight, embedding_before)
    assert (trainer.model.encoder.weight != 0).all()
    # save → load keeps the exact zeros and the masks
    run = load_run(tmp_path / "run", "latest")
    for name, mask in masks.items():
        assert torch.equal(run.masks[name], mask)
        assert torch.equal(dict(run.model.named_parameters())[name], trained[name])


def test_pruned_model_state_dict_loads_into_unpruned_model_and_deepcopies():
    model = _model()
    params = dict(model.named_parameters())
    masks = global_magnitude_masks({n: params[n] for n in model.rnn_weight_names()}, 0.8)
    apply_masks(model, masks)
    clone = copy.deepcopy(model)
    fresh = _model()
    assert set(model.state_dict()) == set(fresh.state_dict())
    fresh.load_state_dict(model.state_dict())
    report = sparsity_report(fresh, fresh.rnn_weight_names())
    assert report["weight_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert torch.equal(clone.layers[0].weight_hh, model.layers[0].weight_hh)


def test_dropconnect_sees_the_current_mask():
    """The classic trap: a prune hook would re-mask only after DropConnect read the weight."""
    model = _model(dropout_connect=0.5)
    params = dict(model.named_parameters())
    masks = global_magnitude_masks({n: params[n] for n in model.rnn_weight_names()}, 0.9)
    apply_masks(model, masks)
    seen = []
    layer = model.layers[0]
    original = layer.forward

    def spy(x, state=None, weight_hh=None):
        seen.append(weight_hh.detach().clone())
        return original(x, state, weight_hh=weight_hh)

    layer.forward = spy
    model.train()
    model(torch.randint(0, 30, (5, 2)))
    assert (seen[0][~masks["layers.0.weight_hh"]] == 0).all()


def test_prune_run_end_to_end_and_resume_after_interrupt(tiny_corpus_dir, tmp_path):
    corpus = read_corpus(tiny_corpus_dir)
    train(tiny_run_config(epochs=2), corpus, tmp_path / "dense", progress=False)
    record = prune_run(
        tmp_path / "dense",
        tmp_path / "pruned",
        corpus,
        target=0.75,
        steps=2,
        finetune_epochs=1,
        progress=False,
    )
    assert record["sparsity"]["weight_sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert [h["step"] for h in record["history"]] == [1, 2]
    assert record["history"][0]["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    run = load_run(tmp_path / "pruned")
    assert sparsity_report(run.model, run.model.rnn_weight_names())[
        "weight_sparsity"
    ] == pytest.approx(0.75, abs=1e-3)
    assert json.loads((tmp_path / "pruned" / "prune.json").read_text())["target"] == 0.75
    # a step's config.json is laid out as train writes a run's (same keys, order, indent),
    # with the step's own fine-tuning values
    step_text = (tmp_path / "pruned" / "step-1" / "config.json").read_text()
    dense_text = (tmp_path / "dense" / "config.json").read_text()
    assert [line.split(":")[0] for line in step_text.splitlines()] == [
        line.split(":")[0] for line in dense_text.splitlines()
    ]
    step_state = ckpt.read_state(ckpt.checkpoint_dir(tmp_path / "pruned" / "step-1", "latest"))
    assert json.loads(step_text) == step_state["config"]
    # a second call finds both steps done and reproduces the same final model
    again = prune_run(
        tmp_path / "dense",
        tmp_path / "pruned",
        corpus,
        target=0.75,
        steps=2,
        finetune_epochs=1,
        progress=False,
    )
    assert again["history"] == record["history"]


def test_cli_refuses_targets_outside_unit_interval(tmp_path, capsys):
    for bad in ("1.0", "-0.2", "1.5"):
        code = main(["prune", str(tmp_path), "--target", bad, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: --target")


def sigterm_at_training_window(n: int):
    """A forward hook on every module that sends SIGTERM (as a scheduler or the sweep does)
    to this process during the ``n``-th training forward of the language model."""
    seen = [0]

    def hook(module, _inputs, _output):
        if isinstance(module, LanguageModel) and module.training:
            seen[0] += 1
            if seen[0] == n:
                # never SIGTERM the test process itself unless the training loop catches it
                assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
                os.kill(os.getpid(), signal.SIGTERM)

    return torch.nn.modules.module.register_module_forward_hook(hook)


def test_prune_interrupted_mid_step_resumes_to_the_uninterrupted_result(tiny_corpus_dir, tmp_path):
    """SIGTERM in the middle of step 1's first epoch, then again in the middle of step 2,
    and a third call finishes: masks, weights and record equal an unbroken prune."""
    corpus = read_corpus(tiny_corpus_dir)
    train(tiny_run_config(epochs=1), corpus, tmp_path / "dense", progress=False)
    options = dict(target=0.75, steps=2, finetune_epochs=2, progress=False)
    reference = prune_run(tmp_path / "dense", tmp_path / "unbroken", corpus, **options)
    out = tmp_path / "pruned"
    for window, stopped_in in ((3, "step-1"), (12, "step-2")):  # step 1 has 2 epochs of 5-6
        handle = sigterm_at_training_window(window)
        try:
            with pytest.raises(DualsparseError, match=r"\(interrupted\).*same prune command"):
                prune_run(tmp_path / "dense", out, corpus, **options)
        finally:
            handle.remove()
        state = ckpt.read_state(ckpt.checkpoint_dir(out / stopped_in, "latest"))
        assert state["window"] > 0 and not (out / stopped_in / "step-done.json").exists()
    assert (out / "step-1" / "step-done.json").exists() and not (out / "prune.json").exists()
    record = prune_run(tmp_path / "dense", out, corpus, **options)
    assert record["history"] == reference["history"]
    assert record["sparsity"] == reference["sparsity"]
    ours, theirs = load_run(out), load_run(tmp_path / "unbroken")
    assert ours.masks.keys() == theirs.masks.keys() == set(ours.model.rnn_weight_names())
    for name, mask in theirs.masks.items():
        assert torch.equal(ours.masks[name], mask), name
    theirs_weights = theirs.model.state_dict()
    for name, weight in ours.model.state_dict().items():
        assert torch.equal(weight, theirs_weights[name]), name


def _pruned_run(tiny_corpus_dir, tmp_path):
    from dualsparse.runs import new_run, prune_trained_run

    new_run(tmp_path / "dense", tiny_run_config(), str(tiny_corpus_dir), progress=False)
    prune_trained_run(tmp_path / "dense", tmp_path / "pruned", target=0.5, progress=False)
    return tmp_path / "dense", tmp_path / "pruned"


def test_a_pruned_run_without_its_masks_is_an_error_not_a_dense_model(
    tiny_corpus_dir, tmp_path, capsys
):
    """Issue 15, point 7: it was evaluated and resumed as dense (sparsity 0.500 -> 0.412)."""
    _, pruned = _pruned_run(tiny_corpus_dir, tmp_path)
    assert load_run(pruned).masks  # the masks are there, and loaded
    (ckpt.checkpoint_dir(pruned, "best") / "masks.safetensors").unlink()
    for argv in (["evaluate", str(pruned)], ["train", "--resume", str(pruned)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "masks.safetensors is missing" in err, err
    # a fine-tuning step's own checkpoint (not named pruned-*) is recognised by its state
    step = ckpt.checkpoint_dir(pruned / "step-1", "best")
    (step / "masks.safetensors").unlink()
    assert "is missing" in str(pytest.raises(DualsparseError, load_run, pruned / "step-1").value)


def test_pruning_onto_an_existing_run_is_refused_and_leaves_it_alone(tiny_corpus_dir, tmp_path):
    """Issue 15, point 6: B's latest/best were repointed and its checkpoint orphaned."""
    from conftest import file_contents
    from dualsparse.runs import new_run, prune_trained_run

    dense, other = tmp_path / "dense", tmp_path / "other"
    new_run(dense, tiny_run_config(), str(tiny_corpus_dir), progress=False)
    new_run(other, tiny_run_config(seed=2), str(tiny_corpus_dir), progress=False)
    before = file_contents(other)
    with pytest.raises(DualsparseError, match="already holds a run"):
        prune_trained_run(dense, other, target=0.5, progress=False)
    assert file_contents(other) == before
