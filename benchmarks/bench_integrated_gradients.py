"""Time deeplift's integrated gradients against Captum's ``IntegratedGradients``, side by side.

Same small CNN, same inputs, baselines, target and number of steps; the two run interleaved in one
plain process and the script prints the median seconds per call of each and their ratio, for two
settings: each library's defaults (deeplift ``batch_size=256`` interpolation points per pass,
Captum ``internal_batch_size=None``, all points at once), and the same number of points per
forward pass for both (deeplift's ``batch_size`` = Captum's ``internal_batch_size``). Captum is in
the ``bench`` extra: ``pip install 'deeplift[bench]'``.

    python benchmarks/bench_integrated_gradients.py [--n 32] [--steps 50] [--batch-size 400]
        [--rounds 15] [--threads 2]

Both use a midpoint Riemann sum (Captum's ``method="riemann_middle"``) so that the two compute the
same numbers; the script checks they agree before timing. Run it on a quiet machine: the figure
is only as good as the machine is idle.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import deeplift


def small_cnn(n_out: int = 3) -> nn.Module:
    """One-hot DNA (4, 200) -> two convolutions with max pooling -> a dense head (logits)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 32, 11, padding=5), nn.ReLU(), nn.MaxPool1d(4),
                         nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(5),
                         nn.Flatten(), nn.Linear(32 * 10, 64), nn.ReLU(), nn.Linear(64, n_out)).eval()


def one_hot(n: int, length: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 4, (n, length), generator=g)
    return torch.nn.functional.one_hot(idx, 4).permute(0, 2, 1).float().contiguous()


def median_times(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, run interleaved so a busy spell slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="examples per call")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=400,
                        help="interpolation points per forward pass in the same-batch setting")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from captum.attr import IntegratedGradients  # the bench extra

    torch.set_num_threads(args.threads)
    module = small_cnn()
    x = one_hot(args.n)
    baseline = torch.full_like(x, 0.25)
    model = deeplift.convert(module, x[:2])
    captum_ig = IntegratedGradients(module)

    def ours(batch: int | None):
        kwargs = {} if batch is None else {"batch_size": batch}
        return lambda: deeplift.attribute(model, x, baseline, method="integrated_gradients",
                                          target=1, steps=args.steps, **kwargs)

    def theirs(batch: int | None):
        return lambda: captum_ig.attribute(x, baseline, target=1, n_steps=args.steps,
                                           method="riemann_middle", internal_batch_size=batch)

    a, b = ours(None)(), theirs(None)()  # also the warm-up
    err = (a - b).abs().max().item() / (1e-12 + b.abs().max().item())
    if err > 1e-4:
        raise SystemExit(f"deeplift and Captum disagree: relative max difference {err:.3g}")
    settings = {"defaults": (None, None), f"{args.batch_size} points per pass": (args.batch_size,) * 2}
    fns = {}
    for label, (ours_batch, their_batch) in settings.items():
        fns[("deeplift", label)] = ours(ours_batch)
        fns[("captum", label)] = theirs(their_batch)
    medians = median_times(fns, args.rounds)
    print(f"small CNN, {args.n} examples x {args.steps} steps, {args.threads} threads, median of "
          f"{args.rounds} interleaved rounds; results agree to {err:.1e} (relative)")
    for label in settings:
        ours_s, theirs_s = medians[("deeplift", label)], medians[("captum", label)]
        print(f"{label:24s} deeplift {ours_s * 1e3:8.2f} ms/call   captum {theirs_s * 1e3:8.2f} "
              f"ms/call   captum/deeplift = {theirs_s / ours_s:.2f}")
    print("(a ratio above 1: deeplift is faster)")


if __name__ == "__main__":
    main()
