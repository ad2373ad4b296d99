"""The training recipe: config + corpus → run directory with metrics and checkpoints.

One epoch walks the batchified train split in AWD-LSTM windows (variable
length, learning rate scaled by window / bptt), carrying the hidden state.
After each epoch the model is validated, a checkpoint is written (atomically),
and early stopping is checked. Ctrl-C, SIGTERM and the time budget stop the run
between two windows with a checkpoint of the exact position, so ``resume``
loses nothing; resuming at an epoch boundary reproduces the uninterrupted run.

Under torchrun every rank runs this same loop on its share of the batch columns
(``distributed.py``); rank 0 alone writes the run directory, and the decisions
that end an epoch or the run are taken on numbers all ranks share.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dualsparse.config import RunConfig, config_to_json
from dualsparse.data.batching import batchify, bptt_windows, get_batch, lr_scale
from dualsparse.data.corpus import Corpus
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import evaluate
from dualsparse.models.lm import LanguageModel, detach_state
from dualsparse.sparsity.masks import apply_masks
from dualsparse.training import checkpoint as ckpt
from dualsparse.training import distributed
from dualsparse.training.guards import check_new_run_dir, run_lock, stop_on_signals
from dualsparse.training.metrics import append_metrics
from dualsparse.training.optim import lr_at, make_optimizer, set_lr
from dualsparse.training.trainer_state import (
    restore_trainer_state,
    save_trainer_state,
    window_position,
)


@dataclass
class TrainSummary:
    run_dir: str
    epochs_done: int
    stopped: str  # "completed" | "early-stopping" | "time-budget" | "interrupted"
    best_valid_loss: float
    best_valid_ppl: float
    last_valid_ppl: float | None
    elapsed_seconds: float


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DualsparseError("--device cuda was asked for but no CUDA GPU is visible; use cpu")
    return torch.device(name)


class Trainer:
    """Owns model, optimizer, data stream and position of one run.

    ``initial_model`` starts from given weights (fine-tuning after pruning);
    ``masks`` (parameter name → bool tensor, False = pruned) are re-applied to the
    parameters after every optimizer step, so pruned weights stay exactly zero
    whatever the optimizer's moments or weight decay would do to them.
    """

    def __init__(
        self,
        cfg: RunConfig,
        corpus: Corpus,
        run_dir: Path,
        *,
        progress: bool = True,
        initial_model: LanguageModel | None = None,
        masks: dict[str, torch.Tensor] | None = None,
    ):
        self.cfg, self.corpus, self.run_dir = cfg, corpus, Path(run_dir)
        self.rank, self.world_size = distributed.rank_and_world()
        self.is_main = self.rank == 0  # the only rank that writes into run_dir
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress and self.is_main
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.rank_device(resolve_device(t.device))
        torch.manual_seed(t.seed)  # the same on every rank: same weights, same dropout stream
        self.model = LanguageModel(cfg.model, len(corpus.vocab)).to(self.device)
        self.net: torch.nn.Module = self.model  # what training calls; DDP around it in run()
        if initial_model is not None:
            self.model.load_state_dict(initial_model.state_dict())
        self.masks = {k: v.to(self.device) for k, v in (masks or {}).items()}
        apply_masks(self.model, self.masks)
        self.optimizer = make_optimizer(self.model, t)
        self.batch_rng = torch.Generator().manual_seed(t.seed)
        full_batch = batchify(corpus.train, t.batch_size)
        self.train_data = distributed.column_shard(full_batch, self.rank, self.world_size)
        self.train_data = self.train_data.to(self.device)
        self.state: dict[str, Any] = {
            "epoch": 0,
            "window": 0,
            "global_step": 0,
            "best_valid_loss": None,
            "bad_epochs": 0,
            "elapsed_seconds": 0.0,
            "finished": False,
        }
        self.epoch_rng_state: torch.Tensor | None = None
        self.hidden = None
        # what the time budget keeps for the closing validation: the last validation's
        # duration, or before the first one an estimate (estimate_validation_seconds)
        self._valid_seconds = 0.0
        self._window_seconds = 0.0  # the last training window's duration (time budget)

    # ---------------------------------------------------------------- persistence
    def save(self, pointers=("latest",)) -> None:
        """Called on every rank: the carried state of all columns is gathered for rank 0."""
        save_trainer_state(self, pointers)

    def restore(self) -> None:
        restore_trainer_state(self)

    def epoch_windows(self, generator: torch.Generator) -> list[tuple[int, int]]:
        t = self.cfg.train
        return bptt_windows(
            self.train_data.shape[0], t.bptt, variable=t.variable_bptt, generator=generator
        )

    def log(self, record: dict) -> None:
        if self.is_main:
            append_metrics(self.run_dir, record)

    # ---------------------------------------------------------------- training
    def run(self, max_minutes: float | None = None) -> TrainSummary:
        t = self.cfg.train
        started, elapsed_before = time.monotonic(), self.state["elapsed_seconds"]
        deadline = started + 60 * max_minutes if max_minutes else None
        flag: dict = {}
        stopped, last_valid = "completed", None
        lock = run_lock(self.run_dir) if self.is_main else nullcontext()
        self.net = distributed.wrap(self.model, self.device)
        with lock, stop_on_signals(flag):
            if deadline is not None and not self._valid_seconds:
                self._valid_seconds = self.estimate_validation_seconds()
            while self.state["epoch"] < t.epochs and not self.state["finished"]:
                outcome = self._train_epoch(flag, deadline)
                valid_started = time.monotonic()
                valid = evaluate(
                    self.model, self.corpus.valid, t.eval_batch_size, t.bptt, split="valid"
                )
                last_valid = valid.perplexity
                self._valid_seconds = time.monotonic() - valid_started
                if not math.isfinite(valid.loss):
                    self._diverged(f"validation loss {valid.loss}")
                # every rank validates; all decide on rank 0's loss, so they never disagree
                (valid_loss,) = distributed.from_rank0([valid.loss], self.device)
                # only epoch-end validations move "best" and count toward early stopping, so
                # an interrupted and resumed run takes the same decisions as an unbroken one
                improved = outcome == "epoch" and self._record_validation(valid_loss)
                position = window_position(self.state, self._n_windows)
                if outcome == "epoch":
                    self.state.update(epoch=self.state["epoch"] + 1, window=0)
                    self.hidden, self.epoch_rng_state = None, None
                    position = self.state["epoch"]
                    if t.patience and self.state["bad_epochs"] >= t.patience:
                        self.state["finished"] = True
                        stopped = "early-stopping"
                else:
                    stopped = outcome
                self.state["elapsed_seconds"] = elapsed_before + time.monotonic() - started
                self.log(
                    {
                        "event": outcome,
                        "epoch": position,
                        "train_loss": self._epoch_loss,
                        "valid_loss": valid.loss,
                        "valid_ppl": valid.perplexity,
                        "valid_activity": valid.layer_activity,
                        "lr": self._last_lr,
                        "tokens_per_s": self._tokens_per_s,
                        "elapsed_seconds": self.state["elapsed_seconds"],
                    }
                )
                self.save(("latest", "best") if improved else ("latest",))
                if outcome != "epoch":
                    break
        best = self.state["best_valid_loss"]
        return TrainSummary(
            str(self.run_dir),
            self.state["epoch"],
            stopped,
            best,
            # stopped before any epoch ended: the perplexity it measured, not nan
            math.exp(best) if best is not None else (last_valid or float("nan")),
            last_valid,
            self.state["elapsed_seconds"],
        )

    def estimate_validation_seconds(self, windows: int = 2, at_least_s: float = 0.5) -> float:
        """How long validating the whole split will take: the first ``windows`` eval
        windows of it timed, scaled by its length. A time budget keeps this much for the
        closing validation until a real validation has been timed. A probe that takes
        under ``at_least_s`` is doubled and timed again (up to the whole split): one timing
        of a few milliseconds, scaled up, turns any pause of a busy machine into a reserve
        several times too large (CI: 0.69 s for a 0.11 s validation). It costs about
        ``windows`` windows of validation once, or at most about 2 * ``at_least_s``. The
        model's training mode and the random streams are left as they were (evaluation
        draws no random numbers)."""
        t, valid = self.cfg.train, self.corpus.valid
        probe = min(len(valid), windows * t.bptt * t.eval_batch_size + 1)
        while True:
            started = time.monotonic()
            evaluate(self.model, valid[:probe], t.eval_batch_size, t.bptt, split="valid")
            seconds = time.monotonic() - started
            if seconds >= at_least_s or probe >= len(valid):
                return seconds * len(valid) / max(probe, 1)
            probe = min(len(valid), 2 * probe - 1)

    def _diverged(self, what: str) -> None:
        """Stop a run whose numbers left the finite range; nothing of it is saved."""
        t = self.cfg.train
        raise DualsparseError(
            f"training diverged in epoch {self.state['epoch'] + 1} ({what}); the run's last "
            f"checkpoint, if any, is kept as it was. Lower train.lr (now {t.lr:g}) or clip "
            f"gradients harder (train.clip, now {t.clip:g}), e.g. "
            f"--set train.lr={t.lr / 10:g}"
        )

    def _record_validation(self, loss: float) -> bool:
        best = self.state["best_valid_loss"]
        improved = best is None or loss < best
        if improved:
            self.state["best_valid_loss"] = loss
            self.state["bad_epochs"] = 0
        else:
            self.state["bad_epochs"] += 1
        return improved

    def _train_epoch(self, flag: dict, deadline: float | None) -> str:
        t, model = self.cfg.train, self.model
        if self.epoch_rng_state is None:  # a fresh epoch draws its windows from the run's stream
            self.epoch_rng_state = self.batch_rng.get_state()
            generator = self.batch_rng
        else:  # resuming mid-epoch: redraw the same windows from the epoch's start state
            generator = torch.Generator()
            generator.set_state(self.epoch_rng_state)
        windows = self.epoch_windows(generator)
        self._n_windows = len(windows)
        columns = self.train_data.shape[1]  # this rank's share of batch_size
        hidden = self.hidden if self.hidden is not None else model.init_state(columns)
        model.train()
        total_loss, total_tokens, t0 = 0.0, 0, time.monotonic()
        self._epoch_loss, self._tokens_per_s, self._last_lr = float("nan"), 0.0, t.lr
        bar = tqdm(
            total=len(windows),
            initial=self.state["window"],
            disable=not self.progress,
            desc=f"epoch {self.state['epoch'] + 1}/{t.epochs}",
            unit="win",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        outcome = "epoch"
        try:
            for w in range(self.state["window"], len(windows)):
                window_started = time.monotonic()
                begin, seq_len = windows[w]
                inputs, targets = get_batch(self.train_data, begin, seq_len)
                lr = lr_at(t, self.state["epoch"] + w / len(windows), t.epochs)
                set_lr(self.optimizer, lr * lr_scale(inputs.shape[0], t.bptt))
                self._last_lr = lr
                out = self.net(inputs, detach_state(hidden))
                hidden = out.state
                loss = F.cross_entropy(
                    out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1)
                )
                self.optimizer.zero_grad(set_to_none=True)
                (loss + out.regularization).backward()
                # the norm is all-reduced under DDP, so every rank takes the same decision
                norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), t.clip if t.clip > 0 else math.inf
                )
                if not math.isfinite(float(norm)):
                    self._diverged(f"gradient norm {float(norm)} at window {w + 1}")
                self.optimizer.step()
                model.constrain_()
                apply_masks(model, self.masks)
                total_loss += loss.item() * targets.numel()
                total_tokens += targets.numel()
                self.state["window"] = w + 1
                self.state["global_step"] += 1
                bar.update(1)
                self._window_seconds = time.monotonic() - window_started
                if (w + 1) % t.log_interval == 0 or w + 1 == len(windows):
                    mean = total_loss / total_tokens
                    self._tokens_per_s = total_tokens / max(time.monotonic() - t0, 1e-9)
                    bar.set_postfix(
                        loss=f"{mean:.3f}",
                        ppl=f"{math.exp(min(mean, 50)):.1f}",
                        tok_s=f"{self._tokens_per_s:,.0f}",
                        lr=f"{lr:.2e}",
                    )
                if w + 1 < len(windows):
                    stop = self._stop_reason(flag, deadline)
                    if stop:
                        outcome = stop
                        break
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            bar.close()
        total_loss, total_tokens = distributed.sum_over_ranks(
            [total_loss, total_tokens], self.device
        )
        self._epoch_loss = total_loss / max(total_tokens, 1)
        self._tokens_per_s = total_tokens / max(time.monotonic() - t0, 1e-9)
        self.hidden = detach_state(hidden) if outcome != "epoch" else None
        if outcome == "epoch" and self.state["window"] < len(windows):
            outcome = "interrupted"
        return outcome

    def _stop_reason(self, flag: dict, deadline: float | None) -> str | None:
        """Stop when any rank was signalled or ran out of time, all ranks at the same window."""
        signalled = "signal" in flag
        # the closing validation is part of the budget, and a window is not started that
        # would end past it: stop early by the validation's duration and the last window's
        reserve = self._valid_seconds + self._window_seconds
        late = deadline is not None and time.monotonic() + reserve > deadline
        signalled, late = distributed.sum_over_ranks([signalled, late], self.device)
        return "interrupted" if signalled else "time-budget" if late else None


def train(
    cfg: RunConfig,
    corpus: Corpus,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train (or resume) a run in ``out_dir``; returns a summary of how it ended.

    Launched by torchrun, this joins the job for the length of the run (see
    ``distributed.py``); all ranks stop at the same window for the same reason.
    """
    run_dir = Path(out_dir)
    # the run's lock before its state is read or anything written (rank 0 alone writes)
    launch = distributed.torchrun_launch()
    lock = run_lock(run_dir) if launch is None or launch.rank == 0 else nullcontext()
    with lock, distributed.process_group(cfg.train.device):
        if resume:
            trainer = Trainer(cfg, corpus, run_dir, progress=progress)
            trainer.restore()
        else:
            check_new_run_dir(run_dir)
            trainer = Trainer(cfg, corpus, run_dir, progress=progress)  # makes run_dir
            if trainer.is_main:
                ckpt.atomic_write_text(run_dir / "config.json", config_to_json(cfg))
        summary = trainer.run(max_minutes=max_minutes)
        del trainer  # its DDP wrapper must be freed before the process group (distributed.py)
        return summary
