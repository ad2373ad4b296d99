"""Pruning masks as plain tensors beside the model, and the pure maths of choosing them.

Why not ``torch.nn.utils.prune``: it reparametrises ``weight`` as ``weight_orig *
weight_mask`` in a forward-pre-hook. Our DropConnect reads ``weight_hh`` in the
language model's forward *before* the layer's hooks run, so the layer would get
a mask one step stale; the reparametrised module also changes the state_dict
keys (``weight_orig``/``weight_mask`` no longer load into an unpruned model) and
cannot be deep-copied while it carries hooks. Here the mask is applied to the
parameter itself (``weight *= mask``) after every optimizer step and on load, so
the parameter *is* the pruned weight: every reader (DropConnect, export, MAC
counting) sees exact zeros, the state_dict keys stay those of an unpruned model,
and masks travel in their own ``masks.safetensors``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Zero the pruned entries of each masked parameter, in place."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))


def global_magnitude_masks(weights: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Masks that prune the ``sparsity`` fraction of smallest-magnitude entries, globally.

    One magnitude ranking over all given matrices together (global unstructured
    pruning, paper sec. 3.2): exactly round(sparsity · total) entries are pruned,
    ties broken by position so the result is deterministic. Entries that are
    already zero rank first, so pruning more never revives a pruned weight.
    Each tensor must be listed once (a tied weight counted twice would skew the budget).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} outside [0, 1)")
    ids = [id(w) for w in weights.values()]
    if len(set(ids)) != len(ids):
        raise ValueError("a weight tensor is listed twice; each may enter the budget once")
    names = list(weights)
    flat = torch.cat([weights[n].detach().abs().reshape(-1).cpu() for n in names])
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune:
        order = torch.sort(flat, stable=True).indices
        keep[order[:n_prune]] = False
    masks, offset = {}, 0
    for name in names:
        size = weights[name].numel()
        masks[name] = (
            keep[offset : offset + size].reshape(weights[name].shape).to(weights[name].device)
        )
        offset += size
    return masks


def sparsity_report(model: nn.Module, names: list[str]) -> dict:
    """Fraction of exact zeros per matrix and over all of them together."""
    params = dict(model.named_parameters())
    rows, zeros, total = [], 0, 0
    for name in names:
        w = params[name]
        z = int((w == 0).sum())
        rows.append(
            {
                "name": name,
                "shape": list(w.shape),
                "nonzero": w.numel() - z,
                "weight_sparsity": z / w.numel(),
            }
        )
        zeros, total = zeros + z, total + w.numel()
    return {
        "matrices": rows,
        "weights": total,
        "zeros": zeros,
        "weight_sparsity": zeros / max(total, 1),
    }
