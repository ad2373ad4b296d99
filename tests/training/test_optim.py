"""The learning-rate recipe: cosine schedule, warm-up, scheduler_start, per-window scaling.

Every expected rate is worked out by hand in the test; cos(π/4) = √2/2 = 0.70710678,
so the cosine factor (1 + cos(π·done/span)) / 2 over span 4 is 1, 0.85355339, 0.5,
0.14644661, 0 for done = 0..4.
"""

import pytest

from conftest import tiny_run_config
from dualsparse.data.batching import lr_scale
from dualsparse.data.corpus import read_corpus
from dualsparse.models.lm import LanguageModel
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.loop import train
from dualsparse.training.optim import lr_at, make_optimizer, set_lr

COSINE_OVER_4 = [1.0, 0.85355339, 0.5, 0.14644661, 0.0]  # (1 + cos(π·k/4)) / 2


def train_config(**train):
    return tiny_run_config(**train).train


def test_cosine_steps_once_per_epoch_from_lr_to_min_lr():
    # lr(e) = min_lr + (lr - min_lr)·(1 + cos(π·floor(e)/epochs)) / 2
    cfg = train_config(lr=1.0, min_lr=0.0, epochs=4)
    for epoch, factor in enumerate(COSINE_OVER_4):
        assert lr_at(cfg, epoch, 4) == pytest.approx(factor, abs=1e-8)
    # within an epoch the rate holds: 1.0 and 1.99 are both epoch 1
    assert lr_at(cfg, 1.99, 4) == pytest.approx(0.85355339, abs=1e-8)
    # the last epoch (3.x) trains at done = 3, never at min_lr (CosineAnnealingLR)
    assert lr_at(cfg, 3.5, 4) == pytest.approx(0.14644661, abs=1e-8)
    # min_lr = 0.1, lr = 1.1: 0.1 + 1.0·factor
    cfg = train_config(lr=1.1, min_lr=0.1, epochs=4)
    assert lr_at(cfg, 2, 4) == pytest.approx(0.6, abs=1e-8)
    assert lr_at(cfg, 4, 4) == pytest.approx(0.1, abs=1e-8)
    assert lr_at(cfg, 7, 4) == pytest.approx(0.1, abs=1e-8)  # past the end: stays at min_lr


def test_scheduler_start_holds_lr_then_anneals_over_the_remaining_epochs():
    # start 2 of 6 epochs: lr until epoch 2, then cosine over span 6 - 2 = 4, done = floor(e) - 2
    cfg = train_config(lr=1.0, min_lr=0.0, epochs=6, scheduler_start=2)
    expected = {0: 1.0, 1: 1.0, 1.99: 1.0, 2: 1.0, 2.5: 1.0, 3: 0.85355339, 4: 0.5}
    expected.update({5: 0.14644661, 5.99: 0.14644661, 6: 0.0})  # epoch 5 is the last one
    for epoch, rate in expected.items():
        assert lr_at(cfg, epoch, 6) == pytest.approx(rate, abs=1e-8), epoch
    # a start at or past the last epoch keeps the rate constant (span clamped to 1, done = 0)
    late = train_config(lr=0.3, min_lr=0.0, epochs=3, scheduler_start=5)
    assert [lr_at(late, e, 3) for e in (0, 1.5, 2.9)] == [0.3, 0.3, 0.3]


def test_constant_schedule_ignores_min_lr_and_the_epoch():
    cfg = train_config(lr=0.02, min_lr=0.001, epochs=4, schedule="constant")
    assert [lr_at(cfg, e, 4) for e in (0, 1, 2.5, 3.99, 4)] == [0.02] * 5


def test_linear_warm_up_multiplies_the_scheduled_rate():
    # during warm-up: rate · (e + 0.001) / warmup_epochs (the 0.001 keeps the first window > 0)
    cfg = train_config(lr=1.0, epochs=4, schedule="constant", warmup_epochs=2)
    assert lr_at(cfg, 0, 4) == pytest.approx(0.0005, abs=1e-12)  # 0.001 / 2
    assert lr_at(cfg, 0.5, 4) == pytest.approx(0.2505, abs=1e-12)  # 0.501 / 2
    assert lr_at(cfg, 1.999, 4) == pytest.approx(1.0, abs=1e-12)  # 2.0 / 2
    assert lr_at(cfg, 2, 4) == 1.0  # warm-up over
    # with cosine: epoch 1.5 is cosine step 1 (0.85355339) times 1.501 / 2 = 0.64059182
    cfg = train_config(lr=1.0, min_lr=0.0, epochs=4, warmup_epochs=2)
    assert lr_at(cfg, 1.5, 4) == pytest.approx(0.64059182, abs=1e-8)
    assert lr_at(cfg, 2, 4) == pytest.approx(0.5, abs=1e-8)


def test_window_rate_is_scaled_by_window_over_bptt_and_thresholds_by_their_scale():
    """AWD-LSTM: lr · seq_len / bptt for a window; thresholds also × threshold_lr_scale."""
    cfg = tiny_run_config(lr=0.01, bptt=8, threshold_lr_scale=0.5)
    optimizer = make_optimizer(LanguageModel(cfg.model, vocab_size=30), cfg.train)
    set_lr(optimizer, lr_at(cfg.train, 0, 1) * lr_scale(5, 8))
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    # 0.01 · 5/8 = 0.00625; thresholds 0.00625 · 0.5 = 0.003125
    assert rates == pytest.approx({"weights": 0.00625, "biases": 0.00625, "thresholds": 0.003125})
    set_lr(optimizer, lr_at(cfg.train, 0, 1) * lr_scale(12, 8))  # a long window: 0.01 · 1.5
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.015, 0.015, 0.0075])


@pytest.mark.parametrize("decay_thresholds", [True, False])
def test_the_optimizer_decays_thresholds_only_when_the_config_says_so(decay_thresholds):
    """train.decay_thresholds reaches the optimizer: the thresholds' group gets bias_decay
    (dualsparse's default) or no decay at all (the EvNN reference)."""
    cfg = tiny_run_config(bias_decay=0.3, weight_decay=0.1, decay_thresholds=decay_thresholds)
    optimizer = make_optimizer(LanguageModel(cfg.model, vocab_size=30), cfg.train)
    decay = {group["name"]: group["weight_decay"] for group in optimizer.param_groups}
    assert decay == {
        "weights": 0.1,
        "biases": 0.3,
        "thresholds": 0.3 if decay_thresholds else 0.0,
    }


def test_training_sets_the_last_short_window_to_its_scaled_rate(tiny_corpus_dir, tmp_path):
    """The loop applies the scaling: 154 tokens in 4 columns are 38 rows, 37 input steps,
    fixed windows of 8 are 8, 8, 8, 8, 5; the last one trains at 0.01 · 5/8 = 0.00625."""
    corpus = read_corpus(tiny_corpus_dir)
    cfg = tiny_run_config(lr=0.01, bptt=8, variable_bptt=False, threshold_lr_scale=0.5)
    train(cfg, corpus, tmp_path / "run", progress=False)
    state = ckpt.read_state(ckpt.checkpoint_dir(tmp_path / "run", "latest"))
    assert state["global_step"] == 5
    rates = {group["name"]: group["lr"] for group in state["optimizer_groups"]}
    assert rates == pytest.approx({"weights": 0.00625, "biases": 0.00625, "thresholds": 0.003125})
