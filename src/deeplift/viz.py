"""Plots of attribution scores: sequence logos for DNA and heatmaps for images.

matplotlib is optional (``pip install deeplift[plot]``) and imported only inside these functions.
Files are written through a plain Agg canvas (no pyplot state, nothing is shown), at
``figsize * dpi`` pixels exactly (no tight bounding box), so sizes are predictable.

Logo semantics follow the original DeepLIFT ``viz_sequence``: at every position the four scores
are drawn as letters A, C, G, T whose height is the signed score; positive letters are stacked
upward from 0, negative ones downward (upside down), smaller magnitudes nearest the axis.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from deeplift.errors import DeepLiftError, InputError

__all__ = [
    "PlottingUnavailableError",
    "DEFAULT_COLORS",
    "draw_letter",
    "draw_logo",
    "plot_logo",
    "plot_heatmap",
]

#: Letter colours by channel index (A, C, G, T), as in the original.
DEFAULT_COLORS: dict[int, str] = {0: "green", 1: "blue", 2: "orange", 3: "red"}
_LETTERS = "ACGT"
# Horizontal margin of a glyph inside its unit-wide slot (fraction of the slot).
_GLYPH_MARGIN = 0.04


class PlottingUnavailableError(DeepLiftError, ImportError):
    """Plotting was asked for but matplotlib is not installed."""


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlottingUnavailableError(
            "deeplift plotting needs matplotlib, which is not installed; "
            "install it with `pip install deeplift[plot]` (or `pip install matplotlib`)"
        ) from exc
    return matplotlib


# --------------------------------------------------------------------------------------------
# glyphs
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _unit_glyph(letter: str) -> tuple[np.ndarray, np.ndarray]:
    """Outline of ``letter`` (bold sans-serif) scaled to fill the unit square: (vertices, codes)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    prop = FontProperties(family="DejaVu Sans", weight="bold")
    path = TextPath((0.0, 0.0), letter, size=1.0, prop=prop)
    ext = path.get_extents()
    if ext.width <= 0 or ext.height <= 0:
        raise InputError(f"cannot draw {letter!r} as a glyph")
    verts = np.array(path.vertices, dtype=float)
    verts[:, 0] = (verts[:, 0] - ext.x0) / ext.width
    verts[:, 1] = (verts[:, 1] - ext.y0) / ext.height
    return verts, np.array(path.codes, dtype=np.uint8)


def _glyph_vertices(
    letter: str, left: np.ndarray, base: np.ndarray, height: np.ndarray, width: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices/codes of many copies of a glyph, copy j in [left_j, left_j+width] x [base_j,
    base_j+height_j] (a negative height flips it below ``base_j``)."""
    verts, codes = _unit_glyph(letter)
    inner = width * (1.0 - 2.0 * _GLYPH_MARGIN)
    x = left[:, None] + width * _GLYPH_MARGIN + verts[None, :, 0] * inner
    y = base[:, None] + verts[None, :, 1] * height[:, None]
    all_verts = np.stack([x, y], axis=-1).reshape(-1, 2)
    return all_verts, np.tile(codes, len(left))


def draw_letter(
    ax: Any,
    letter: str,
    left_edge: float,
    base: float,
    height: float,
    color: Any,
    width: float = 1.0,
) -> Any:
    """Draw one letter glyph filling ``[left_edge, left_edge+width] x [base, base+height]``.

    A negative height draws the letter upside down below ``base``. Returns the PathPatch.
    """
    _require_matplotlib()
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    verts, codes = _glyph_vertices(
        letter, np.array([left_edge], float), np.array([base], float), np.array([height], float),
        width,
    )
    patch = PathPatch(Path(verts, codes), facecolor=color, edgecolor="none", linewidth=0)
    ax.add_patch(patch)
    return patch


# --------------------------------------------------------------------------------------------
# logos
# --------------------------------------------------------------------------------------------


def _to_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array: {exc}") from exc
    return arr


def _positions_by_channel(
    x: Any, name: str, n_channels: int = 4, layout: str | None = None
) -> np.ndarray:
    """Normalise logo input to ``(L, n_channels)``.

    3-D input with a singleton axis is squeezed; ``layout=None`` takes ``(L, 4)`` as is and
    transposes ``(4, L)`` (as the original: a ``(4, 4)`` array is read as ``(L, 4)``).
    """
    arr = _to_array(x, name)
    if arr.ndim == 3:
        squeezed = np.squeeze(arr)
        if squeezed.ndim != 2:
            raise InputError(
                f"{name} of shape {arr.shape} is 3-D without a single singleton axis; "
                f"plot one sequence at a time ((L, {n_channels}) or ({n_channels}, L))"
            )
        arr = squeezed
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be (L, {n_channels}) or ({n_channels}, L), got shape {arr.shape}"
        )
    if layout is None:
        if arr.shape[1] == n_channels:
            pass
        elif arr.shape[0] == n_channels:
            arr = arr.T
        else:
            raise InputError(
                f"{name} must be (L, {n_channels}) or ({n_channels}, L), got shape {arr.shape}"
            )
    elif layout == "channels_first":
        if arr.shape[0] != n_channels:
            raise InputError(f"{name} must be ({n_channels}, L) (channels_first), got {arr.shape}")
        arr = arr.T
    elif layout == "channels_last":
        if arr.shape[1] != n_channels:
            raise InputError(f"{name} must be (L, {n_channels}) (channels_last), got {arr.shape}")
    else:
        raise InputError(
            f"layout must be None, 'channels_first' or 'channels_last', got {layout!r}"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def _stack_bases(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each letter starts: (bases (L, C), positive totals (L,), negative totals (L,)).

    Per position, letters sorted by |score| ascending; positives stack up from 0, the rest down.
    """
    order = np.argsort(np.abs(scores), axis=1, kind="stable")
    vals = np.take_along_axis(scores, order, axis=1)
    pos = np.where(vals > 0, vals, 0.0)
    neg = np.where(vals > 0, 0.0, vals)
    pos_cum = np.cumsum(pos, axis=1)
    neg_cum = np.cumsum(neg, axis=1)
    base_sorted = np.where(vals > 0, pos_cum - pos, neg_cum - neg)
    bases = np.empty_like(scores)
    np.put_along_axis(bases, order, base_sorted, axis=1)
    return bases, pos_cum[:, -1], neg_cum[:, -1]


def _check_highlight(highlight: Mapping[Any, Sequence[Sequence[int]]] | None, length: int):
    if not highlight:
        return []
    if not isinstance(highlight, Mapping):
        raise InputError("highlight must be a dict {colour: [(start, end), ...]}")
    boxes = []
    for color, spans in highlight.items():
        for span in spans:
            try:
                start, end = (int(v) for v in span)
            except (TypeError, ValueError):
                raise InputError(
                    f"highlight[{color!r}] entries must be (start, end) pairs, got {span!r}"
                ) from None
            if not 0 <= start < end <= length:
                raise InputError(
                    f"highlight span ({start}, {end}) for {color!r} is outside 0..{length} "
                    "or empty (need 0 <= start < end <= L)"
                )
            boxes.append((color, start, end))
    return boxes


def draw_logo(
    ax: Any,
    scores: Any,
    colors: Mapping[int, Any] | None = None,
    letter_funcs: Mapping[int, Callable[..., Any]] | None = None,
    height_padding_factor: float = 0.2,
    length_padding: float = 1.0,
    subticks_frequency: float | None = None,
    highlight: Mapping[Any, Sequence[Sequence[int]]] | None = None,
    layout: str | None = None,
) -> Any:
    """Draw a signed-score sequence logo of ``scores`` ((L, 4) or (4, L)) on ``ax``.

    ``colors`` maps channel index -> colour (default A green, C blue, G orange, T red).
    ``letter_funcs`` (the original's ``plot_funcs``) maps channel index -> a function
    ``f(ax=, base=, left_edge=, height=, color=)`` called per letter; None draws the built-in
    A/C/G/T glyphs in one patch per letter (fast). Limits: x in ``[-length_padding,
    L + length_padding]``, y from the deepest negative stack to the highest positive stack
    padded by ``height_padding_factor`` times the larger of the two; x ticks every
    ``subticks_frequency`` (None: matplotlib's choice). ``highlight`` = {colour: [(start, end),
    ...]} draws unfilled boxes over those positions. Returns ``ax``.
    """
    _require_matplotlib()
    from matplotlib.patches import PathPatch, Rectangle
    from matplotlib.path import Path

    arr = _positions_by_channel(scores, "scores", layout=layout)
    length = arr.shape[0]
    boxes = _check_highlight(highlight, length)
    cols = dict(DEFAULT_COLORS)
    if colors:
        cols.update(colors)
    bases, pos_tot, neg_tot = _stack_bases(arr)

    for c in range(4):
        drawn = np.nonzero(arr[:, c] != 0)[0]
        if drawn.size == 0:
            continue
        if letter_funcs is not None and c in letter_funcs:
            for i in drawn:
                letter_funcs[c](
                    ax=ax, base=float(bases[i, c]), left_edge=float(i),
                    height=float(arr[i, c]), color=cols[c],
                )
            continue
        verts, codes = _glyph_vertices(
            _LETTERS[c], drawn.astype(float), bases[drawn, c], arr[drawn, c]
        )
        ax.add_patch(
            PathPatch(Path(verts, codes), facecolor=cols[c], edgecolor="none", linewidth=0)
        )

    for color, start, end in boxes:
        lo = float(np.min(neg_tot[start:end]))
        hi = float(np.max(pos_tot[start:end]))
        ax.add_patch(
            Rectangle((start, lo), end - start, hi - lo, fill=False, edgecolor=color,
                      linewidth=1.5)
        )

    max_pos = float(max(np.max(pos_tot, initial=0.0), 0.0))
    min_neg = float(min(np.min(neg_tot, initial=0.0), 0.0))
    pad = height_padding_factor * max(abs(min_neg), abs(max_pos))
    if max_pos - min_neg + 2 * pad <= 0:  # all scores zero: keep a visible, non-degenerate range
        min_neg, max_pos, pad = -1.0, 1.0, 0.0
    ax.set_xlim(-length_padding, length + length_padding)
    ax.set_ylim(min_neg - pad, max_pos + pad)
    if subticks_frequency is not None:
        if subticks_frequency <= 0:
            raise InputError(f"subticks_frequency must be > 0, got {subticks_frequency}")
        ax.set_xticks(np.arange(0.0, length + 1, subticks_frequency))
    return ax


def _new_figure(figsize: Sequence[float], dpi: float, for_file: bool) -> tuple[Any, Any]:
    """A figure and axes; a pyplot-free Agg figure when only writing a file."""
    if len(figsize) != 2 or min(figsize) <= 0 or dpi <= 0:
        raise InputError(f"figsize must be two positive numbers and dpi > 0, got {figsize}, {dpi}")
    if for_file:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=tuple(figsize), dpi=dpi)
        FigureCanvasAgg(fig)
    else:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=tuple(figsize), dpi=dpi)
    return fig, fig.add_subplot(1, 1, 1)


def _finish(fig: Any, out: Any, dpi: float, own_figure: bool) -> None:
    if own_figure:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tight_layout may complain on tiny figures
            fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=dpi)


def plot_logo(
    scores: Any,
    ax: Any = None,
    onehot: Any = None,
    highlight: Mapping[Any, Sequence[Sequence[int]]] | None = None,
    title: str | None = None,
    out: Any = None,
    figsize: Sequence[float] = (20, 2),
    *,
    dpi: float = 100,
    layout: str | None = None,
    sum_channels: bool = False,
    colors: Mapping[int, Any] | None = None,
    height_padding_factor: float = 0.2,
    length_padding: float = 1.0,
    subticks_frequency: float | None = None,
) -> tuple[Any, Any]:
    """Sequence logo of per-base scores; returns ``(figure, axes)``.

    ``scores`` is ``(L, 4)`` or ``(4, L)`` (``layout`` forces one reading; by default a
    ``(4, L)`` array with L != 4 is transposed). ``onehot`` (same shape) multiplies the scores
    first so only the observed base is drawn; with ``sum_channels=True`` the scores are summed
    over the 4 channels before that (the original notebooks' way of showing a position's total
    DeepLIFT contribution). ``highlight`` = {colour: [(start, end), ...]} boxes. When ``out`` is
    given a PNG (or any format matplotlib infers from the name) of ``figsize * dpi`` pixels is
    written; nothing is ever shown. ``ax`` draws into an existing axes instead of a new figure.
    """
    _require_matplotlib()
    arr = _positions_by_channel(scores, "scores", layout=layout)
    if sum_channels:
        arr = np.repeat(arr.sum(axis=1, keepdims=True), 4, axis=1)
    if onehot is not None:
        mask = _positions_by_channel(onehot, "onehot", layout=layout)
        if mask.shape != arr.shape:
            raise InputError(f"onehot shape {mask.shape} does not match scores {arr.shape}")
        arr = arr * mask
    own = ax is None
    if own:
        fig, ax = _new_figure(figsize, dpi, for_file=out is not None)
    else:
        fig = ax.figure
    draw_logo(
        ax, arr, colors=colors, height_padding_factor=height_padding_factor,
        length_padding=length_padding, subticks_frequency=subticks_frequency,
        highlight=highlight, layout="channels_last",
    )
    if title is not None:
        ax.set_title(title)
    _finish(fig, out, dpi, own)
    return fig, ax


# --------------------------------------------------------------------------------------------
# heatmaps
# --------------------------------------------------------------------------------------------


def _to_2d(x: Any, name: str, layout: str, reduce: Callable[[np.ndarray, int], np.ndarray]):
    arr = _to_array(x, name)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3:
        if layout == "channels_first":
            arr = reduce(arr, 0)
        elif layout == "channels_last":
            arr = reduce(arr, -1)
        else:
            raise InputError(f"layout must be 'channels_first' or 'channels_last', got {layout!r}")
    elif arr.ndim != 2:
        raise InputError(
            f"{name} must be (H, W) or one image (C, H, W) / (H, W, C) per layout, "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def _grayscale(img: np.ndarray, axis: int) -> np.ndarray:
    if img.shape[axis] == 3:  # RGB luminance
        weights = np.array([0.299, 0.587, 0.114])
        return np.tensordot(np.moveaxis(img, axis, -1), weights, axes=([-1], [0]))
    return img.mean(axis=axis)


def plot_heatmap(
    scores: Any,
    image: Any = None,
    out: Any = None,
    cmap: str = "RdBu_r",
    alpha: float = 0.6,
    *,
    ax: Any = None,
    title: str | None = None,
    figsize: Sequence[float] = (5, 4),
    dpi: float = 100,
    layout: str = "channels_first",
    vmax: float | None = None,
    colorbar: bool = True,
) -> tuple[Any, Any]:
    """Diverging heatmap of 2-D attribution scores, optionally over the image; ``(figure, axes)``.

    ``scores`` is ``(H, W)`` or ``(C, H, W)`` (``(H, W, C)`` with ``layout="channels_last"``;
    a leading batch axis of 1 is dropped); channels are summed, so the map shows each pixel's
    total contribution. Colours are symmetric around 0 (``vmax`` defaults to max |score|) so
    white means no contribution. ``image`` (same layout and spatial size) is drawn underneath in
    grayscale, min-max normalised, with the heatmap on top at opacity ``alpha * |score| / vmax``
    (the image stays visible where scores are near 0). ``out`` writes a PNG of ``figsize * dpi``
    pixels.
    """
    _require_matplotlib()
    s = _to_2d(scores, "scores", layout, lambda a, ax_: a.sum(axis=ax_))
    gray = None
    if image is not None:
        gray = _to_2d(image, "image", layout, _grayscale)
        if gray.shape != s.shape:
            raise InputError(
                f"image is {gray.shape[0]}x{gray.shape[1]} but scores are {s.shape[0]}x"
                f"{s.shape[1]} (both are read with layout={layout!r})"
            )
        span = float(gray.max() - gray.min())
        gray = (gray - gray.min()) / span if span > 0 else np.zeros_like(gray)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    limit = float(np.max(np.abs(s))) if vmax is None else float(vmax)
    if not limit > 0:
        limit = 1.0
    own = ax is None
    if own:
        fig, ax = _new_figure(figsize, dpi, for_file=out is not None)
    else:
        fig = ax.figure
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=-limit, vmax=limit)
    if gray is not None:
        ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        # opacity grows with |score| (up to alpha): the image shows where nothing contributes
        opacity = alpha * np.clip(np.abs(s) / limit, 0.0, 1.0)
        ax.imshow(s, cmap=cmap, norm=norm, interpolation="nearest", alpha=opacity)
    else:
        ax.imshow(s, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.04)
    if title is not None:
        ax.set_title(title)
    _finish(fig, out, dpi, own)
    return fig, ax
