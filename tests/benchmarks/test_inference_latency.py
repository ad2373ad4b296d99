"""benchmarks/inference_latency.py --json, the form scripts read (issue 13): one row per
contender and thread count, with ``name``, ``threads`` and the per-token medians, RNN only
and end to end. Run as a user runs it, on a tiny exported EGRU with one peer."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from dualsparse.config import ModelConfig
from dualsparse.engine.export import export_model
from dualsparse.models.lm import LanguageModel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "inference_latency.py"


def test_json_has_one_row_per_contender_with_its_medians(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(type="egru", emb_size=8, hidden_sizes=[10, 6])
    model = LanguageModel(config, 30).eval()
    export = export_model(model, ["<eos>", "<unk>", *(f"w{i}" for i in range(28))], tmp_path / "m")
    args = ["--model", str(export), "--tokens", "10", "--threads", "1", "--peers", "torch CSR"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    # the contenders bench.run_benchmark times for an unpruned EGRU with the torch CSR peer
    dense = ["dense AWD-LSTM", "dense EGRU (model size)", "dense GRU (model size)"]
    expected = {
        *dense,
        *(f"{name}, table" for name in dense),
        "engine EGRU (0% pruned, table)",
        "engine EGRU (0% pruned, no table)",
        "engine AWD-LSTM (dense, no table)",
        "torch CSR EGRU (0% pruned)",
        "torch CSR EGRU (0% pruned), table",
    }
    assert sorted(r["name"] for r in rows) == sorted(expected)  # each once
    for row in rows:
        assert row["threads"] == 1
        for part in ("rnn", "full"):
            median = row[f"ms_per_token_{part}_median"]
            assert isinstance(median, float) and 0 < median <= row[f"ms_per_token_{part}_p90"]
