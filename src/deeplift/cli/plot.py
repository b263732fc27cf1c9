"""``deeplift plot``: sequence logos and heatmaps of a scores file."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError, _shape, _text
from .hdf5_probe import probe_hdf5
from .output import check_output_path, write_output
from .score import OUT_SUFFIXES
from .sources import BUNDLED


def cmd_plot(args: argparse.Namespace) -> int:
    from ..io import load_scores
    from ..viz import _require_matplotlib
    path = Path(args.scores)
    if not path.exists():
        raise CliError(f"scores file {path} does not exist", "run 'deeplift score' first, or check the path")
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise CliError(f"scores file {path} is not .npz or .h5", "give a file written by 'deeplift score'")
    if args.window < 1:
        raise CliError(f"--window must be at least 1, got {args.window}", "e.g. --window 100")
    _require_matplotlib()
    if path.suffix.lower() in (".h5", ".hdf5"):
        probe_hdf5(path, f"scores file {path}")
    try:
        saved = load_scores(path)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files
        raise CliError(f"cannot read scores {path}: {_text(exc)}", "give a file written by 'deeplift score'") from exc
    if "inputs" not in saved:
        raise CliError(f"{path} holds no inputs", "plot needs the inputs saved next to the scores by 'deeplift score'")
    scores, x, meta = np.asarray(saved["scores"]), np.asarray(saved["inputs"]), saved["metadata"]
    _check_contents(path, scores, x, meta)
    scores, label = _pick_target(scores, x, meta, args.target)
    examples = _parse_examples(args.examples, len(x))
    kind = _plot_kind(x)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out-dir {out_dir} is a file", "give a directory name")
    check_output_path(out_dir / f".{path.stem}.png", "--out-dir", [("scores file", path)])
    for i in examples:
        out = out_dir / f"{path.stem}_example{i}_{_safe(label)}.png"
        if kind == "logo":
            _write_logo(out, scores[i], x[i], meta, i, label, args.window)
        else:
            _write_heatmap(out, scores[i], x[i], kind, i, label)
        print(f"wrote {out}")
    return 0


def _check_contents(path: Path, scores: np.ndarray, x: np.ndarray, meta: Any) -> None:
    """Scores and inputs that do not belong together are refused, not drawn."""
    if not isinstance(meta, dict):
        raise CliError(f"{path}: its metadata is a {type(meta).__name__}, not a mapping",
                       "give a file written by 'deeplift score'")
    for name, a in (("scores", scores), ("inputs", x)):
        if a.ndim < 2 or not np.issubdtype(a.dtype, np.number):
            raise CliError(f"{path}: its {name} are {a.dtype} of shape {_shape(a.shape)}, not a batch "
                           "of numbers (N, ...)", "give a file written by 'deeplift score'")
    for key, kind in (("targets", int), ("task_names", str)):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, kind) for v in value)):
            raise CliError(f"{path}: its metadata field {key!r} is not a list of {kind.__name__}",
                           "give a file written by 'deeplift score'")
    if len(x) == 0 or len(scores) == 0:
        raise CliError(f"{path} holds no examples", "score at least one example, then plot")
    with_axis = meta.get("target_axis", scores.ndim == x.ndim + 1)
    per_example = scores.shape[2:] if with_axis and scores.ndim == x.ndim + 1 else scores.shape[1:]
    if len(scores) != len(x) or tuple(per_example) != tuple(x.shape[1:]):
        raise CliError(f"{path}: scores {_shape(scores.shape)} and inputs {_shape(x.shape)} disagree "
                       "in shape", "give a file written by 'deeplift score' (scores (N[, T], ...) for "
                       "inputs (N, ...))")


def _pick_target(scores: np.ndarray, x: np.ndarray, meta: dict, wanted: str | None) -> tuple[np.ndarray, str]:
    targets = list(meta.get("targets") or [])
    names = meta.get("task_names") or None
    has_axis = meta.get("target_axis", scores.ndim == x.ndim + 1)
    if not has_axis:
        only = str(names[0]) if names else (f"target {targets[0]}" if targets else "target")
        if wanted is not None and wanted not in (only, *(str(t) for t in targets)):
            raise CliError(f"--target {wanted} is not in this file, which holds scores for {only} only",
                           "drop --target, or score that target first")
        return scores, only
    if not targets:
        targets = list(range(scores.shape[1]))
    if wanted is None:
        k = 0
    elif names and wanted in names:
        k = names.index(wanted)
    elif re.fullmatch(r"-?\d+", wanted) and int(wanted) in targets:
        k = targets.index(int(wanted))
    else:
        have = names or targets
        raise CliError(f"--target {wanted} is not in this file, which holds {have}",
                       "give one of those (a unit index or task name)")
    label = str(names[k]) if names else f"target {targets[k]}"
    return scores[:, k], label


def _parse_examples(text: str | None, n: int) -> list[int]:
    if text is None:
        return list(range(min(3, n)))
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--examples {text!r} is not a comma-separated list of indices", "e.g. --examples 0,3,5") from None
    bad = [v for v in values if not 0 <= v < n]
    if not values or bad:
        raise CliError(f"--examples {text!r}: the file holds examples 0..{n - 1}",
                       "give indices in that range, e.g. --examples 0,3,5")
    return values


def _plot_kind(x: np.ndarray) -> str:
    if x.ndim == 3 and 4 in (x.shape[1], x.shape[2]) and np.isin(x, (0, 1)).all():
        return "logo"
    if x.ndim == 3:
        return "heatmap_2d"
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return "heatmap_channels_first"
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return "heatmap_channels_last"
    raise CliError(f"cannot plot scores for inputs of shape {_shape(x.shape[1:])}",
                   "plot draws one-hot DNA (4, L)/(L, 4) as logos and images (H, W), (C, H, W) or "
                   "(H, W, C) with 1 or 3 channels as heatmaps")


def _write_logo(out: Path, scores: np.ndarray, onehot: np.ndarray, meta: dict, index: int,
                label: str, window: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from ..viz import plot_logo
    layout = meta.get("layout") or ("channels_first" if onehot.shape[0] == 4 else "channels_last")
    if layout == "channels_last":
        scores, onehot = scores.T, onehot.T  # (4, L) from here on
    hypothetical = bool(meta.get("hypothetical"))
    observed = (scores * onehot).sum(0) if hypothetical else scores.sum(0)
    length = scores.shape[1]
    width = min(window, length)
    start = int(np.clip(int(np.argmax(np.abs(observed))) - width // 2, 0, length - width))
    stop = start + width
    fig = Figure(figsize=(max(6.0, 0.12 * width), 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    part = scores[:, start:stop]
    kwargs = {} if hypothetical else {"onehot": onehot[:, start:stop], "sum_channels": True}
    plot_logo(part, ax=ax, layout="channels_first",
              highlight=_motif_boxes(meta, index, start, stop), **kwargs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v + start))}"))
    ax.set_ylabel("hypothetical score" if hypothetical else "score", fontsize=8)
    ax.set_title(f"example {index}, {label}, {meta.get('method', 'scores')}, positions "
                 f"{start}-{stop - 1}", fontsize=9)
    _save_figure(fig, out)


def _motif_boxes(meta: dict, index: int, start: int, stop: int) -> dict | None:
    """The bundled example's embedded motifs inside the window, as highlight boxes."""
    if meta.get("model") != BUNDLED:
        return None
    from ..examples.motif_model import load_example_data
    colours = {"GATA": "purple", "TAL1": "brown"}
    boxes: dict[str, list] = {}
    for seq, name, s, e, _ in load_example_data()["motif_positions"]:
        if seq == index and s >= start and e <= stop:
            boxes.setdefault(colours.get(name, "black"), []).append((s - start, e - start))
    return boxes or None


def _write_heatmap(out: Path, scores: np.ndarray, image: np.ndarray, kind: str, index: int,
                   label: str) -> None:
    from ..viz import plot_heatmap
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    layout = "channels_last" if kind == "heatmap_channels_last" else "channels_first"
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    plot_heatmap(scores, image=image, ax=ax, layout=layout, title=f"example {index}, {label}")
    _save_figure(fig, out)


def _save_figure(fig: Any, out: Path) -> None:
    import io
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_output(out, "--out-dir", buffer.getvalue())


def _safe(label: str) -> str:
    return re.sub(r"[^\w.-]+", "_", label)
