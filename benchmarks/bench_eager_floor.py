"""Why 10 shuffled references run op by op (``fuse=False``, the fallback without a compiler) cost
more than fused: the Rescale factor of every nonlinearity, timed op by op and fused, on the
tensors of one batch, next to the whole calls — in one plain process.

    python benchmarks/bench_eager_floor.py [--rounds 9] [--threads 2]

The case is the ``dinuc x10`` row of ``bench_methods.py``: genomics_default (Rescale on the
convolutional ReLUs) over 10 dinucleotide-shuffled references per sequence, 64 sequences of the
BPNet-like model, batch 64 — batches of 60 pairs from 6 sequences. Per ReLU of one batch:

- ``one pass``: a copy of one per-pair activation (the unit: one read and one write);
- ``op by op``: the library's eager steps — Δx and Δy (each sequence's row minus its 10
  references' rows), the ratio Δy/Δx, |Δx| and its minimum per block (the near-zero search,
  ``_below``), the product with the incoming multipliers;
- ``op by op, no near-zero search``: the four steps no op-by-op Rescale can skip;
- ``fused``: the compiled kernel the fused run calls instead (the same arithmetic in one loop).

Whole calls (medians of interleaved rounds, each timed right after a plain autograd input
gradient): fused and op by op, as ratios to the gradient. The per-layer gap times the ReLUs
scored per call (ReLUs × batches) predicts the op-by-op call from the fused one; the four
unavoidable steps alone give the op-by-op floor.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial
from typing import Callable

import torch

import deeplift
from deeplift import references
from deeplift.fusion import kernel
from deeplift.layers.activations import ReLU, _rescale_times_kernel
from deeplift.methods import get_method
from bench_methods import autograd_gradient, make_case

SHUFFLES = 10


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layer_steps(examples: int, shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """The Rescale steps on one ReLU's tensors for ``examples`` sequences of ``SHUFFLES`` pairs."""
    torch.manual_seed(0)
    pairs = examples * SHUFFLES
    x_in, r_in = torch.randn(examples, *shape), torch.randn(pairs, *shape)
    x_out, r_out = torch.relu(x_in), torch.relu(r_in)
    m = torch.randn(1, pairs, *shape)
    x_index = torch.arange(examples).repeat_interleave(SHUFFLES)
    out = torch.empty(pairs, *shape)
    work = [torch.empty(pairs, *shape) for _ in range(2)]
    blocks = out.numel() // 4096

    def minus(x: torch.Tensor, r: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
        torch.sub(x.unsqueeze(1), r.view(examples, SHUFFLES, *shape),
                  out=into.view(examples, SHUFFLES, *shape))
        return into

    def op_by_op(search: bool) -> Callable[[], object]:
        def run() -> None:
            dx, dy = minus(x_in, r_in, work[0]), minus(x_out, r_out, work[1])
            dy.div_(dx)
            if search:
                dx.abs_().view(-1)[: blocks * 4096].view(blocks, 4096).amin(1)
            torch.mul(m[0], dy, out=out)
        return run
    f, d = ReLU().fused_functions()  # the library's own kernel (same key, same compiled code)
    fused = kernel(("rescale_times", f, d), lambda: partial(_rescale_times_kernel, f, d),
                   "rescale_times relu")
    return {"one pass": lambda: out.copy_(r_in),
            "op by op": op_by_op(True),
            "op by op, no near-zero search": op_by_op(False),
            "fused": lambda: fused(True, m, x_in, x_out, x_index, r_in, r_out, 1e-7)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, cpu, {args.threads} threads, {args.rounds} rounds, plain process")

    module, x, _ = make_case("bpnet", 64, "cpu")
    model = deeplift.convert(module, x[:2])
    shuffles = references.dinuc_shuffle(n=SHUFFLES, seed=0)(x)
    per_batch = get_method("genomics_default").pairs_per_batch(len(x), 1, SHUFFLES)
    batches = math.ceil(len(x) * SHUFFLES / per_batch)
    shapes = model.layer_shapes([x], model.layer_names)
    relus = [n for n, layer in model.layers.items()
             if isinstance(layer, ReLU) and len(shapes[n]) == 3]  # the convolutional ones
    shape = shapes[relus[0]][1:]

    def call(fuse: bool) -> Callable[[], object]:
        return lambda: deeplift.attribute(model, x, shuffles, method="genomics_default", target=0,
                                          batch_size=len(x), fuse=fuse)
    calls = {"fused": call(True), "op by op": call(False)}
    ratios: dict[str, list[float]] = {k: [] for k in calls}
    gradient_ms = []
    for fn in calls.values():  # warm-up (compiles the kernels once)
        fn()
    for _ in range(args.rounds):
        for name, fn in calls.items():
            autograd_gradient(module, x)
            start = time.perf_counter()
            autograd_gradient(module, x)
            base = time.perf_counter() - start
            gradient_ms.append(1e3 * base)
            start = time.perf_counter()
            fn()
            ratios[name].append((time.perf_counter() - start) / base)
    gradient = statistics.median(gradient_ms)
    whole = {k: statistics.median(v) for k, v in ratios.items()}

    steps = layer_steps(per_batch // SHUFFLES, shape)
    layer = {name: median_ms(fn, 5 * args.rounds) for name, fn in steps.items()}
    scored = len(relus) * batches
    print(f"\n{len(x)} sequences x {SHUFFLES} shuffles: {batches} batches of {per_batch} pairs, "
          f"{len(relus)} convolutional ReLUs (Rescale) -> {scored} per call; "
          f"gradient {gradient:.0f} ms")
    print(f"\nper ReLU of one batch ({per_batch} pairs x {' x '.join(map(str, shape))}):")
    for name, ms in layer.items():
        print(f"  {name:32s} {ms:6.2f} ms  {ms / layer['one pass']:4.1f} passes")
    print("\nwhole calls (x the gradient):")
    for name, ratio in whole.items():
        print(f"  {name:32s} {ratio:6.2f}x")
    for name in ("op by op", "op by op, no near-zero search"):
        gap = scored * (layer[name] - layer["fused"]) / gradient
        print(f"  {'fused + ' + name:32s} {whole['fused'] + gap:6.2f}x  predicted "
              f"({scored} x {layer[name] - layer['fused']:.2f} ms more per ReLU)")


if __name__ == "__main__":
    main()
