"""GPU check of paper-ptb-egru: short training, CPU/device equality, tokens/s beside cuDNN GRU.

Three parts, under 10 minutes on one GPU at the preset's size:

1. trains ``paper-ptb-egru`` (the shipped preset, through ``training.loop.Trainer``)
   for ``--steps`` optimizer steps of a corpus directory; the progress bar shows
   loss and tokens/s as it goes;
2. takes the trained weights, one fixed batch and eval mode, and compares the loss
   and the gradient norm on the device with the CPU's (float32, TF32 off);
3. times forward + backward + AdamW of the same-size model with torch.nn.GRU
   (cuDNN on a GPU) in place of the EGRU layers, so the cost of the EGRU's
   Python-level time loop is visible.

    python benchmarks/cuda_check.py [--data ../shared/data/brown] [--device cuda]
        [--steps 300] [--emb 750] [--hidden 1350,1350,750] [--batch-size 64] [--bptt 70]
        [--json]

Exits 1 with one line when the check fails, 2 when CUDA is asked for but absent.
On CPU, ``--compare-dtype float64`` makes the "device" side a float64 copy, so
the comparison itself is exercised (the tests do that).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dualsparse.config import load_preset
from dualsparse.data.batching import batchify, get_batch
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError
from dualsparse.models.lm import LanguageModel
from dualsparse.training.loop import Trainer, resolve_device

LOSS_RTOL = 1e-4
# The gradient is a sum over bptt steps and three layers of products whose float32
# reductions run in a different order on cuBLAS than on the CPU, and the triangular
# surrogate multiplies those differences by up to γ/ε ≈ 13 per layer: 1e-3 relative
# leaves room for that while any wrong kernel (a missing term, a wrong gate) is far off.
GRAD_RTOL = 1e-3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brown"),
        help="corpus directory (PTB format; default: ../shared/data/brown beside the repository)",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="paper-ptb-egru")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of training")
    p.add_argument("--emb", type=int, default=None, help="embedding size (preset's by default)")
    p.add_argument("--hidden", default=None, help="layer sizes, e.g. 1350,1350,750")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--bptt", type=int, default=None)
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--compare-dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--loss-rtol", type=float, default=LOSS_RTOL)
    p.add_argument("--grad-rtol", type=float, default=GRAD_RTOL)
    p.add_argument("--gru-steps", type=int, default=20, help="timed steps of the nn.GRU model")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, epochs: int = 1):
    cfg = load_preset(args.preset)
    model = cfg.model
    if args.emb is not None:
        model = dataclasses.replace(model, emb_size=args.emb)
    if args.hidden is not None:
        model = dataclasses.replace(model, hidden_sizes=[int(h) for h in args.hidden.split(",")])
    train = dataclasses.replace(
        cfg.train,
        device=args.device,
        epochs=epochs,  # of a train split cut to make --steps steps in all (fit_steps)
        seed=args.seed,
        batch_size=args.batch_size or cfg.train.batch_size,
        eval_batch_size=args.batch_size or cfg.train.batch_size,
        bptt=args.bptt or cfg.train.bptt,
        variable_bptt=False,  # so --steps windows are --steps optimizer steps
        log_interval=10,
    )
    return dataclasses.replace(cfg, model=model, train=train)


def fit_steps(corpus, steps: int, batch: int, bptt: int):
    """(corpus, epochs): the train split cut so that ``epochs`` epochs make ``steps`` steps.

    Windows are all ``bptt`` long (no variable bptt), so an epoch of k windows
    needs k * bptt + 1 rows; a corpus shorter than ``steps`` windows is walked
    several times (Brown holds about 190 windows at batch 64, bptt 70). The
    validation split is cut to a few windows: it only has to show the loss fell.
    """
    windows_available = (corpus.train.numel() // batch - 1) // bptt
    if windows_available < 1:
        raise DualsparseError(
            f"train split has {corpus.train.numel()} tokens, fewer than one window of "
            f"{batch} x {bptt + 1}; use a smaller --batch-size or --bptt"
        )
    epochs = math.ceil(steps / windows_available)
    per_epoch = math.ceil(steps / epochs)
    n_valid = min(corpus.valid.numel(), 4 * bptt * batch + batch)
    cut = dataclasses.replace(
        corpus, train=corpus.train[: per_epoch * bptt * batch + batch], valid=corpus.valid[:n_valid]
    )
    return cut, epochs


def loss_and_grad_norm(model: LanguageModel, tokens: torch.Tensor, targets: torch.Tensor):
    """Eval-mode loss of one batch from the zero state and the global norm of its gradient."""
    model.eval()
    model.zero_grad(set_to_none=True)
    out = model(tokens)
    loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = [p.grad.double().norm() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.stack(grads).norm().item()


def compare(model, cfg, vocab_size: int, batch_src: torch.Tensor, device, dtype) -> dict:
    """CPU float32 against ``device``/``dtype`` on the same weights and batch."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokens, targets = get_batch(batch_src, 0, cfg.train.bptt)
    sides = {}
    for name, dev, dt in (("cpu", torch.device("cpu"), torch.float32), ("device", device, dtype)):
        copy = LanguageModel(cfg.model, vocab_size)
        copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        copy = copy.to(device=dev, dtype=dt)
        sides[name] = loss_and_grad_norm(copy, tokens.to(dev), targets.to(dev))
    (cpu_loss, cpu_grad), (dev_loss, dev_grad) = sides["cpu"], sides["device"]
    loss_rel = abs(dev_loss - cpu_loss) / abs(cpu_loss)
    grad_rel = abs(dev_grad - cpu_grad) / max(abs(cpu_grad), 1e-30)
    return {
        "cpu_loss": cpu_loss,
        "device_loss": dev_loss,
        "loss_rel_diff": loss_rel,
        "cpu_grad_norm": cpu_grad,
        "device_grad_norm": dev_grad,
        "grad_rel_diff": grad_rel,
    }


class GRUModel(torch.nn.Module):
    """The same LM shape with torch.nn.GRU layers (cuDNN on a GPU), tied decoder, no dropout."""

    def __init__(self, vocab_size: int, sizes: list[int]):
        super().__init__()
        self.encoder = torch.nn.Embedding(vocab_size, sizes[0])
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.rnns = torch.nn.ModuleList(torch.nn.GRU(i, h) for i, h in pairs)
        self.projection = torch.nn.Linear(sizes[-1], sizes[0]) if sizes[-1] != sizes[0] else None
        self.decoder = torch.nn.Linear(sizes[0], vocab_size)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.encoder(tokens)
        for rnn in self.rnns:
            x, _ = rnn(x)
        if self.projection is not None:
            x = self.projection(x)
        return self.decoder(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gru_tokens_per_s(cfg, vocab_size: int, data: torch.Tensor, device, steps: int) -> float:
    sizes = [cfg.model.emb_size, *cfg.model.hidden_sizes]
    model = GRUModel(vocab_size, sizes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    bptt, tokens_done, elapsed = cfg.train.bptt, 0, 0.0
    n_windows = (data.shape[0] - 1) // bptt
    for step in range(steps + 2):  # the first two warm cuDNN up and are not timed
        inputs, targets = get_batch(data, (step % n_windows) * bptt, bptt)
        sync(device)
        start = time.perf_counter()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        if step >= 2:
            elapsed += time.perf_counter() - start
            tokens_done += targets.numel()
    return tokens_done / max(elapsed, 1e-9)


def run(args: argparse.Namespace) -> dict:
    t = make_config(args).train
    device = resolve_device(args.device)  # DualsparseError when CUDA is asked for but absent
    corpus, epochs = fit_steps(read_corpus(args.data), args.steps, t.batch_size, t.bptt)
    cfg = make_config(args, epochs)
    with tempfile.TemporaryDirectory(prefix="cuda_check_") as run_dir:
        trainer = Trainer(cfg, corpus, run_dir, progress=not args.json)
        sync(device)
        start = time.perf_counter()
        summary = trainer.run()
        sync(device)
        seconds = time.perf_counter() - start  # includes the short closing validation
        steps_done = trainer.state["global_step"]
        model = trainer.model
    train_tokens = steps_done * t.batch_size * t.bptt
    dtype = getattr(torch, args.compare_dtype)
    check = compare(model, cfg, len(corpus.vocab), batchify(corpus.valid, 4), device, dtype)
    gru_tps = gru_tokens_per_s(
        cfg, len(corpus.vocab), trainer.train_data, device, min(args.gru_steps, args.steps)
    )
    egru_tps = train_tokens / seconds
    return {
        "device": str(device),
        "preset": args.preset,
        "emb": cfg.model.emb_size,
        "hidden": cfg.model.hidden_sizes,
        "batch_size": t.batch_size,
        "bptt": t.bptt,
        "steps": steps_done,
        "epochs": cfg.train.epochs,
        "valid_ppl": summary.last_valid_ppl,
        "egru_tokens_per_s": egru_tps,
        "nn_gru_tokens_per_s": gru_tps,
        "nn_gru_over_egru": gru_tps / egru_tps,
        **check,
        "loss_rtol": args.loss_rtol,
        "grad_rtol": args.grad_rtol,
        "passed": check["loss_rel_diff"] <= args.loss_rtol
        and check["grad_rel_diff"] <= args.grad_rtol,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except DualsparseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        r = result
        print(f"{r['preset']} {r['emb']}/{r['hidden']} batch {r['batch_size']} bptt {r['bptt']}")
        print(f"trained {r['steps']} steps on {r['device']}, valid ppl {r['valid_ppl']:.1f}")
        print(f"EGRU (dualsparse) {r['egru_tokens_per_s']:12,.0f} tokens/s (incl. validation)")
        print(f"torch.nn.GRU      {r['nn_gru_tokens_per_s']:12,.0f} tokens/s")
        print(
            f"loss   cpu {r['cpu_loss']:.8g} device {r['device_loss']:.8g} "
            f"rel {r['loss_rel_diff']:.2e} (tol {r['loss_rtol']:.0e})"
        )
        print(
            f"|grad| cpu {r['cpu_grad_norm']:.8g} device {r['device_grad_norm']:.8g} "
            f"rel {r['grad_rel_diff']:.2e} (tol {r['grad_rtol']:.0e})"
        )
    if not result["passed"]:
        print(
            f"FAILED: device differs from CPU (loss rel {result['loss_rel_diff']:.2e}, "
            f"grad-norm rel {result['grad_rel_diff']:.2e})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
