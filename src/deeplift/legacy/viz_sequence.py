"""Original-compatible sequence logos: ``plot_weights`` and ``plot_weights_given_ax``.

Same names, arguments and drawing semantics as ``deeplift.visualization.viz_sequence`` of the
original library; the drawing itself is :func:`deeplift.viz.draw_logo`. Differences: ``out=`` writes
the figure to a file instead of showing it, and the figure is returned.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .. import viz as _viz

__all__ = [
    "default_colors",
    "default_plot_funcs",
    "plot_a",
    "plot_c",
    "plot_g",
    "plot_t",
    "plot_weights_given_ax",
    "plot_weights",
]

default_colors: dict[int, str] = dict(_viz.DEFAULT_COLORS)


def plot_a(ax: Any, base: float, left_edge: float, height: float, color: Any) -> None:
    """Draw an 'A' in ``[left_edge, left_edge+1] x [base, base+height]``."""
    _viz.draw_letter(ax, "A", left_edge, base, height, color)


def plot_c(ax: Any, base: float, left_edge: float, height: float, color: Any) -> None:
    """Draw a 'C' in ``[left_edge, left_edge+1] x [base, base+height]``."""
    _viz.draw_letter(ax, "C", left_edge, base, height, color)


def plot_g(ax: Any, base: float, left_edge: float, height: float, color: Any) -> None:
    """Draw a 'G' in ``[left_edge, left_edge+1] x [base, base+height]``."""
    _viz.draw_letter(ax, "G", left_edge, base, height, color)


def plot_t(ax: Any, base: float, left_edge: float, height: float, color: Any) -> None:
    """Draw a 'T' in ``[left_edge, left_edge+1] x [base, base+height]``."""
    _viz.draw_letter(ax, "T", left_edge, base, height, color)


default_plot_funcs: dict[int, Callable[..., Any]] = {0: plot_a, 1: plot_c, 2: plot_g, 3: plot_t}


def _custom_funcs(
    plot_funcs: Mapping[int, Callable[..., Any]] | None,
) -> dict[int, Callable[..., Any]] | None:
    """Only the entries that differ from the built-in glyphs (those are drawn in bulk)."""
    if not plot_funcs:
        return None
    custom = {k: f for k, f in plot_funcs.items() if default_plot_funcs.get(k) is not f}
    return custom or None


def plot_weights_given_ax(
    ax: Any,
    array: Any,
    height_padding_factor: float = 0.2,
    length_padding: float = 1.0,
    subticks_frequency: float = 1.0,
    highlight: Mapping[Any, Sequence[Sequence[int]]] | None = None,
    colors: Mapping[int, Any] | None = default_colors,
    plot_funcs: Mapping[int, Callable[..., Any]] | None = default_plot_funcs,
) -> Any:
    """Draw a score logo of ``array`` on ``ax``.

    ``array`` is ``(L, 4)``; a 3-D array is squeezed and a ``(4, L)`` array transposed. Letters
    are stacked by |score| (positive up, negative down), x limits ``[-length_padding,
    L + length_padding]``, ticks every ``subticks_frequency``, y limits padded by
    ``height_padding_factor``; ``highlight`` = {colour: [(start, end), ...]}. Returns ``ax``.
    """
    return _viz.draw_logo(
        ax,
        array,
        colors=colors,
        letter_funcs=_custom_funcs(plot_funcs),
        height_padding_factor=height_padding_factor,
        length_padding=length_padding,
        subticks_frequency=subticks_frequency,
        highlight=highlight,
    )


def plot_weights(
    array: Any,
    figsize: Sequence[float] = (20, 2),
    height_padding_factor: float = 0.2,
    length_padding: float = 1.0,
    subticks_frequency: float = 1.0,
    colors: Mapping[int, Any] | None = None,
    plot_funcs: Mapping[int, Callable[..., Any]] | None = None,
    highlight: Mapping[Any, Sequence[Sequence[int]]] | None = None,
    out: Any = None,
    dpi: float = 100,
) -> Any:
    """New figure with :func:`plot_weights_given_ax`; writes ``out`` (``figsize * dpi`` pixels)
    when given, otherwise shows it like the original (``plt.show()``). Returns the figure."""
    _viz._require_matplotlib()
    fig, ax = _viz._new_figure(figsize, dpi, for_file=out is not None)
    plot_weights_given_ax(
        ax,
        array,
        height_padding_factor=height_padding_factor,
        length_padding=length_padding,
        subticks_frequency=subticks_frequency,
        highlight=highlight,
        colors=colors,
        plot_funcs=plot_funcs,
    )
    _viz._finish(fig, out, dpi, own_figure=True)
    if out is None:
        import matplotlib.pyplot as plt

        plt.show()
    return fig
