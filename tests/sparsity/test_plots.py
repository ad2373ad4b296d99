"""Figure files are reproducible (the same figure saved twice gives the same bytes), and
Fig. 4 / Fig. 5 draw every run they are given."""

import subprocess
import sys

import pytest
import torch

from conftest import tiny_run_config
from dualsparse.data.corpus import read_corpus
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.activity import analyze_activity
from dualsparse.sparsity.plots import (
    draw_figure4,
    draw_figure5,
    figure4,
    figure5,
    new_figure,
    save_figure,
)

pytest.importorskip("matplotlib")


def draw(points):
    fig, (ax,) = new_figure(1)
    ax.plot(points, marker="o")
    ax.set_xlabel("x")
    return fig


def test_saving_the_same_figure_twice_gives_identical_files(tmp_path):
    first = save_figure(draw([1, 3, 2]), tmp_path / "a")
    second = save_figure(draw([1, 3, 2]), tmp_path / "b")
    assert set(first) == {"a_png", "a_svg"}
    for fmt in ("png", "svg"):
        assert first[f"a_{fmt}"].read_bytes() == second[f"b_{fmt}"].read_bytes()
    other = save_figure(draw([1, 3, 4]), tmp_path / "c")
    assert other["c_svg"].read_bytes() != first["a_svg"].read_bytes()
    assert b"<dc:date>" not in first["a_svg"].read_bytes()


def activity_runs(tiny_corpus_dir, model_types):
    """(label, activity.json form) of tiny untrained models on the tiny corpus."""
    corpus = read_corpus(tiny_corpus_dir)
    runs = []
    for seed, model_type in enumerate(model_types):
        torch.manual_seed(seed)
        cfg = tiny_run_config({"type": model_type, "threshold_init_mean": 0.05}).model
        report = analyze_activity(LanguageModel(cfg, len(corpus.vocab)), corpus.valid, 2, 4)
        runs.append((f"run {seed}", report.to_dict()))
    return runs


def test_figures_4_and_5_draw_one_curve_per_run_in_every_layer_panel(tiny_corpus_dir, tmp_path):
    runs = activity_runs(tiny_corpus_dir, ["egru", "egru", "egru"])
    for draw, extra_entries in ((draw_figure4, 0), (draw_figure5, 1)):  # Fig. 5: θ crossing
        axes = draw(runs).axes
        assert len(axes) == 2  # the two layers of TINY_RUN
        colours = []
        for ax in axes:
            assert len(ax.patches) == 3
            labels = [text.get_text() for text in ax.get_legend().get_texts()]
            assert [label.split(":")[0] for label in labels[:3]] == ["run 0", "run 1", "run 2"]
            assert len(labels) == 3 + extra_entries
            colours.append([tuple(patch.get_edgecolor()) for patch in ax.patches])
        assert len(set(colours[0])) == 3  # the runs can be told apart ...
        assert colours[0] == colours[1]  # ... and each keeps its colour in every panel
    paths = figure4(runs, tmp_path / "fig4")
    assert paths["fig4_png"].read_bytes().startswith(b"\x89PNG")


def test_figure_5_leaves_out_runs_without_thresholds(tiny_corpus_dir, tmp_path):
    lstm, egru = activity_runs(tiny_corpus_dir, ["lstm", "egru"])
    assert figure5([lstm], tmp_path / "fig5") is None
    # the EGRU is left alone: drawn as one run is, all values and the events above 0
    assert all(len(ax.patches) == 2 for ax in draw_figure5([lstm, egru]).axes)
    assert len(draw_figure4([lstm, egru]).axes[0].patches) == 2


def test_plots_does_not_import_activity_which_imports_it():
    # a fresh interpreter: this file has imported activity into this one already
    code = (
        "import sys, dualsparse.sparsity.plots; "
        "assert 'dualsparse.sparsity.activity' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
