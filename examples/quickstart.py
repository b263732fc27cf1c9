"""The Python API on the bundled motif model: the same job as `deeplift score`, step by step.

    python examples/quickstart.py      (writes into ./out)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import deeplift
from deeplift import references
from deeplift.examples.motif_model import load_example_data, load_example_model
from deeplift.io import save_modisco_inputs, save_scores


def main(n_examples: int = 100, out_dir: str = "out") -> None:
    module = load_example_model()                       # an ordinary nn.Module ending in a sigmoid
    data = load_example_data()
    x = data["onehot"][:n_examples]                     # (N, 4, 200) one-hot DNA
    model = deeplift.convert(module, torch.from_numpy(x[:2]))
    print(model.summary())

    # 10 dinucleotide shuffles per sequence as references; all three tasks in one backward pass
    refs = references.dinuc_shuffle(n=10, seed=0)
    for method in ["rescale", "reveal_cancel", "genomics_default"]:
        scores, delta = deeplift.attribute(model, x, references=refs, method=method,
                                           target="all", return_delta=True)
        print(f"{method:17s} scores {scores.shape}, largest |summation-to-delta error| "
              f"{np.abs(delta).max():.1e}")
    grad_x = deeplift.attribute(model, x, method="gradient_x_input", target="all")
    print(f"gradient_x_input  scores {grad_x.shape}")

    # hypothetical scores for TF-MoDISco, and a scores file
    Path(out_dir).mkdir(exist_ok=True)
    hyp = deeplift.attribute(model, x, references=refs, method="genomics_default", target=0,
                             hypothetical=True)
    ohe_path, shap_path = save_modisco_inputs(Path(out_dir) / "gata", x, hyp)
    scores_path = save_scores(Path(out_dir) / "scores.npz", scores, x,
                              metadata={"method": "genomics_default", "tasks": data["task_names"]})
    print(f"wrote {ohe_path}, {shap_path}, {scores_path}")

    try:
        from deeplift.viz import plot_logo
    except ImportError as exc:  # matplotlib is an optional extra
        print(f"no logo drawn: {exc}")
        return
    path = Path(out_dir) / "logo_example0.png"
    plot_logo(scores[0, 2], onehot=x[0], out=path, title="example 0, task GATA_and_TAL1")
    print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
