"""Score the bundled motif model's example sequences and draw a sequence logo.

Run from a fresh checkout (see the README's first command). Prints, per method, how well the
absolute scores pick out the embedded motif positions (per-task ROC AUC), the largest
summation-to-delta error, and writes out/logo_example0.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import deeplift
from deeplift.examples.motif_model import load_example_data, load_example_model
from deeplift.genomics import dinuc_shuffle_batch


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties averaged)."""
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average the ranks of ties
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def motif_mask(data: dict, n: int, length: int) -> np.ndarray:
    mask = np.zeros((n, length), dtype=bool)
    for seq, _, start, end, _ in data["motif_positions"]:
        if seq < n:
            mask[seq, start:end] = True
    return mask


def main(n_examples: int = 100, n_refs: int = 10, out_dir: str = "out") -> None:
    torch.set_num_threads(2)
    model = load_example_model()
    data = load_example_data()
    x = data["onehot"][:n_examples]
    converted = deeplift.convert(model, torch.from_numpy(x[:2]))
    print(f"converted {type(model).__name__}: {len(converted.layer_names)} layers")
    refs = dinuc_shuffle_batch(x, n_refs, seed=0)  # (N, R, 4, L)
    mask = motif_mask(data, len(x), x.shape[-1])
    for method in ["rescale", "reveal_cancel", "genomics_default", "gradient_x_input"]:
        start = time.perf_counter()
        if method == "gradient_x_input":  # a gradient method: no reference, no delta
            scores, delta = deeplift.attribute(converted, x, method=method, target="all"), None
        else:
            scores, delta = deeplift.attribute(converted, x, references=refs, method=method,
                                               target="all", return_delta=True)
        seconds = time.perf_counter() - start
        per_pos = np.abs(scores.sum(axis=2))  # (N, T, L): |score| of the observed base
        aucs = [auroc(per_pos[:, t].ravel(), mask.ravel()) for t in range(per_pos.shape[1])]
        err = "n/a" if delta is None else f"{np.abs(delta).max():.2e}"
        print(f"{method:18s} {seconds:6.2f}s  motif AUROC per task "
              f"{', '.join(f'{n}={a:.3f}' for n, a in zip(data['task_names'], aucs))}  "
              f"max |sum-to-delta error| {err}")
    scores = deeplift.attribute(converted, x[:1], references=refs[:1], method="genomics_default", target=2)
    Path(out_dir).mkdir(exist_ok=True)
    try:
        from deeplift.viz import plot_logo
        path = Path(out_dir) / "logo_example0.png"
        plot_logo(scores[0], onehot=x[0], out=path, title="example 0, task GATA_and_TAL1 (genomics default)")
        print(f"wrote {path}")
    except ImportError as exc:
        print(f"no logo drawn: {exc}")


if __name__ == "__main__":
    main()
