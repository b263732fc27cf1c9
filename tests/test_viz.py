"""Plots: logos and heatmaps write PNGs of figsize*dpi pixels; bad shapes raise."""

from __future__ import annotations

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from deeplift import viz  # noqa: E402
from deeplift.errors import DeepLiftError, InputError  # noqa: E402
from deeplift.genomics import one_hot_encode  # noqa: E402
from deeplift.visualization import viz_sequence  # noqa: E402

SEQ = "ACGTACGTAGCTTGCAGGCCATATCG"


def png_shape(path) -> tuple[int, int]:
    """(height, width) in pixels of a written PNG, after checking it is not blank."""
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.size > 0
    assert np.ptp(img[..., :3]) > 0, "image is a single flat colour"
    return img.shape[0], img.shape[1]


def scores_4l(seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(4, len(SEQ))


def new_ax():
    fig = Figure(figsize=(6, 2))
    FigureCanvasAgg(fig)
    return fig.add_subplot(1, 1, 1)


def test_plot_logo_writes_png_of_figsize_times_dpi(tmp_path):
    out = tmp_path / "logo.png"
    fig, ax = viz.plot_logo(scores_4l(), out=out, figsize=(8, 2), dpi=50, title="t")
    assert png_shape(out) == (100, 400)
    assert ax.get_title() == "t"
    assert ax.get_xlim() == (-1.0, len(SEQ) + 1.0)
    # a bigger example for a human to look at (kept in the test's own temporary directory)
    viz.plot_logo(
        scores_4l(), highlight={"purple": [(3, 8)]}, title="random scores",
        out=tmp_path / "logo_example.png", figsize=(14, 3),
    )
    assert png_shape(tmp_path / "logo_example.png") == (300, 1400)


def test_plot_logo_accepts_L4_4L_and_squeezed_3d_identically():
    sc = scores_4l(1)
    limits = []
    for arr in (sc, sc.T, sc.T[None]):
        ax = new_ax()
        viz.plot_logo(arr, ax=ax)
        limits.append(ax.get_ylim())
    assert limits[0] == limits[1] == limits[2]


def test_logo_y_limits_follow_stacked_positive_and_negative_totals():
    sc = np.array([[1.0, 2.0, -0.5, 0.0], [-1.0, -3.0, 0.5, 0.25]])  # (L=2, 4)
    ax = new_ax()
    viz.draw_logo(ax, sc, height_padding_factor=0.2, length_padding=1.0)
    # max positive stack 3.0 (pos 0), min negative stack -4.0 (pos 1); pad 0.2 * 4
    np.testing.assert_allclose(ax.get_ylim(), (-4.8, 3.8))
    bases, pos_tot, neg_tot = viz._stack_bases(sc)
    np.testing.assert_allclose(pos_tot, [3.0, 0.75])
    np.testing.assert_allclose(neg_tot, [-0.5, -4.0])
    # smaller magnitudes nearer the axis: at position 1, -1 sits at 0, -3 below it
    assert bases[1, 0] == 0.0 and bases[1, 1] == -1.0
    assert bases[0, 0] == 0.0 and bases[0, 1] == 1.0


def test_plot_logo_onehot_keeps_only_observed_base(tmp_path):
    sc = scores_4l(2)
    oh = one_hot_encode(SEQ)
    ax = new_ax()
    viz.plot_logo(sc, ax=ax, onehot=oh)
    masked = sc * oh
    top = max(0.0, masked.max())
    bottom = min(0.0, masked.min())
    pad = 0.2 * max(top, -bottom)
    np.testing.assert_allclose(ax.get_ylim(), (bottom - pad, top + pad))
    out = tmp_path / "l.png"
    viz.plot_logo(sc, onehot=oh, sum_channels=True, out=out, figsize=(5, 1.5), dpi=80)
    assert png_shape(out) == (120, 400)


def test_plot_logo_bad_inputs_raise():
    with pytest.raises(InputError, match=r"\(L, 4\)"):
        viz.plot_logo(np.zeros((5, 7)), ax=new_ax())
    with pytest.raises(InputError):
        viz.plot_logo(np.zeros(10), ax=new_ax())
    with pytest.raises(InputError):
        viz.plot_logo(np.zeros((2, 10, 4)), ax=new_ax())
    with pytest.raises(InputError, match="NaN"):
        viz.plot_logo(np.full((10, 4), np.nan), ax=new_ax())
    with pytest.raises(InputError, match="onehot shape"):
        viz.plot_logo(np.zeros((10, 4)), onehot=np.zeros((11, 4)), ax=new_ax())
    with pytest.raises(InputError, match="highlight"):
        viz.plot_logo(np.zeros((10, 4)), highlight={"red": [(5, 20)]}, ax=new_ax())


def test_all_zero_scores_still_plot(tmp_path):
    out = tmp_path / "z.png"
    viz.plot_logo(np.zeros((12, 4)), out=out, figsize=(4, 1), dpi=100)
    assert png_shape(out) == (100, 400)


def test_plot_heatmap_writes_png_with_and_without_image(tmp_path):
    yy, xx = np.mgrid[0:28, 0:28]
    ring = np.exp(-((np.hypot(yy - 14, xx - 14) - 8) ** 2) / 4.0)
    image = np.stack([ring] * 3)
    scores = np.zeros((3, 28, 28))
    scores[:, :, :14] += 0.5 * ring[:, :14]
    scores[:, :, 14:] -= 0.3 * ring[:, 14:]
    out = tmp_path / "h.png"
    viz.plot_heatmap(scores, image=image, out=out, figsize=(4, 3), dpi=60)
    assert png_shape(out) == (180, 240)
    out2 = tmp_path / "h2.png"
    viz.plot_heatmap(scores[0], out=out2, colorbar=False)  # (H, W), default 5x4 in at 100 dpi
    assert png_shape(out2) == (400, 500)
    out3 = tmp_path / "h3.png"
    viz.plot_heatmap(
        scores.transpose(1, 2, 0)[None], image=image.transpose(1, 2, 0), layout="channels_last",
        out=out3,
    )
    assert png_shape(out3) == (400, 500)
    viz.plot_heatmap(scores, image=image, out=tmp_path / "heatmap_example.png", title="heatmap")
    assert png_shape(tmp_path / "heatmap_example.png") == (400, 500)


def test_plot_heatmap_colour_scale_is_symmetric_around_zero():
    ax = new_ax()
    viz.plot_heatmap(np.array([[0.5, -2.0], [1.0, 0.0]]), ax=ax, colorbar=False)
    assert ax.images[-1].get_clim() == (-2.0, 2.0)


def test_plot_heatmap_bad_inputs_raise():
    with pytest.raises(InputError):
        viz.plot_heatmap(np.zeros(10))
    with pytest.raises(InputError):
        viz.plot_heatmap(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="image is"):
        viz.plot_heatmap(np.zeros((3, 8, 8)), image=np.zeros((3, 9, 9)))
    with pytest.raises(InputError, match="layout"):
        viz.plot_heatmap(np.zeros((3, 8, 8)), layout="NCHW")
    with pytest.raises(InputError, match="alpha"):
        viz.plot_heatmap(np.zeros((8, 8)), image=np.zeros((8, 8)), alpha=2.0)


def test_viz_sequence_plot_weights_writes_png(tmp_path):
    out = tmp_path / "w.png"
    sc = scores_4l(3)
    fig = viz_sequence.plot_weights(
        sc.T, out=out, subticks_frequency=5, highlight={"black": [(0, 4)]}, figsize=(10, 2)
    )
    assert png_shape(out) == (200, 1000)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_xticks(), np.arange(0, len(SEQ) + 1, 5))
    out2 = tmp_path / "w2.png"
    viz_sequence.plot_weights(sc, out=out2)  # (4, L) is transposed; default 20x2 in
    assert png_shape(out2) == (200, 2000)


def test_viz_sequence_given_ax_padding_and_ticks_and_custom_plot_funcs():
    sc = scores_4l(4).T
    ax = new_ax()
    viz_sequence.plot_weights_given_ax(
        ax, sc, height_padding_factor=0.0, length_padding=2.0, subticks_frequency=2.0
    )
    assert ax.get_xlim() == (-2.0, len(SEQ) + 2.0)
    _, pos_tot, neg_tot = viz._stack_bases(sc)
    np.testing.assert_allclose(ax.get_ylim(), (neg_tot.min(), pos_tot.max()))
    calls = []

    def fake_a(ax, base, left_edge, height, color):
        calls.append((left_edge, base, height, color))

    funcs = dict(viz_sequence.default_plot_funcs)
    funcs[0] = fake_a
    viz_sequence.plot_weights_given_ax(new_ax(), sc, plot_funcs=funcs)
    assert len(calls) == np.count_nonzero(sc[:, 0])
    assert all(c[3] == "green" for c in calls)
    with pytest.raises(InputError):
        viz_sequence.plot_weights_given_ax(new_ax(), np.zeros((10, 5)))


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DeepLiftError, match=r"pip install deeplift\[plot\]") as info:
        viz.plot_logo(np.zeros((5, 4)))
    assert isinstance(info.value, ImportError)
    with pytest.raises(viz.PlottingUnavailableError):
        viz.plot_heatmap(np.zeros((5, 5)))
