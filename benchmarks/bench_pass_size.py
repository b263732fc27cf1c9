"""Why a CPU batch (and a backward pass over several targets) is kept within ``engine.PASS_BYTES``:
the same calls with the cap at 16 MB (the default), 64 MB and off, as ratios to a plain autograd
input gradient of the same batch, in one plain process (interleaved rounds, medians).

    python benchmarks/bench_pass_size.py [--rounds 5] [--threads 2]

Rows: 10 dinucleotide-shuffled references per sequence for 64 sequences of the BPNet-like model
(``batch_size=640`` asked for), and all 10 classes of the image CNN in one call — both from
``bench_methods.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import deeplift
from deeplift import engine, references
from bench_methods import autograd_gradient, make_case

CAPS = {"16 MB (default)": engine.PASS_BYTES, "64 MB": 64 << 20, "off": 1 << 62}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, cpu, {args.threads} threads, {args.rounds} rounds, plain process")
    cases = []
    module, x, _ = make_case("bpnet", 64, "cpu")
    model = deeplift.convert(module, x[:2])
    shuffles = references.dinuc_shuffle(n=10, seed=0)(x)
    cases.append(("BPNet-like, 10 shuffles x 64 sequences", module, x, lambda m=model, x=x: deeplift.attribute(
        m, x, shuffles, method="genomics_default", batch_size=640, fuse=True)))
    module, x, ref = make_case("image", 64, "cpu")
    model = deeplift.convert(module, x[:2])
    cases.append(("image CNN, all 10 targets", module, x, lambda m=model, x=x, r=ref: deeplift.attribute(
        m, x, r, method="rescale", target="all", fuse=True)))
    for label, module, x, call in cases:
        ratios: dict[str, list[float]] = {k: [] for k in CAPS}
        for cap in CAPS.values():  # warm-up (compiles the kernels once)
            engine.PASS_BYTES = cap
            call()
        for _ in range(args.rounds):
            for name, cap in CAPS.items():
                engine.PASS_BYTES = cap
                start = time.perf_counter()
                autograd_gradient(module, x)
                base = time.perf_counter() - start
                start = time.perf_counter()
                call()
                ratios[name].append((time.perf_counter() - start) / base)
        engine.PASS_BYTES = CAPS["16 MB (default)"]
        for name, rs in ratios.items():
            print(f"{label:40s} cap {name:16s} {statistics.median(rs):6.2f}x  (spread "
                  f"{max(rs) / min(rs):.2f})")


if __name__ == "__main__":
    main()
