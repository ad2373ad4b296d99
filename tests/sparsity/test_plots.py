"""Figure files are reproducible: the same figure saved twice gives the same bytes."""

import pytest

from dualsparse.sparsity.plots import new_figure, save_figure

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
