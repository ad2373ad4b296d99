"""The published Tables 2 and 3 (Mukherji et al. 2023), shipped as package data
(``dualsparse/reference/paper_tables.csv``; source in the README beside it)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

DATASETS = {"ptb": "ptb", "wt2": "wikitext2", "wikitext2": "wikitext2"}
TABLE_NUMBER = {"ptb": 2, "wikitext2": 3}
NAMES = {"ptb": "Penn Treebank", "wikitext2": "WikiText-2"}


@dataclass
class PaperRow:
    dataset: str
    model: str
    weight_sparsity: float
    macs_millions: float
    valid_ppl_min: float
    valid_ppl_mean: float
    valid_ppl_std: float
    test_ppl_min: float
    test_ppl_mean: float
    test_ppl_std: float


def paper_rows(dataset: str) -> list[PaperRow]:
    """The published rows of ``dataset`` (ptb, wt2 or wikitext2), in table order."""
    name = DATASETS[dataset]
    text = (resources.files("dualsparse") / "reference" / "paper_tables.csv").read_text()
    rows = []
    for record in csv.DictReader(text.splitlines()):
        if record["dataset"] != name:
            continue
        numbers = {k: float(v) for k, v in record.items() if k not in ("dataset", "model")}
        rows.append(PaperRow(dataset=name, model=record["model"], **numbers))
    return rows


def paper_dense_lstm_macs(rows: list[PaperRow]) -> float:
    """MACs (millions) of the published dense LSTM: what the paper's reduction factors
    are relative to."""
    return next(r.macs_millions for r in rows if r.model == "lstm" and r.weight_sparsity == 0)
