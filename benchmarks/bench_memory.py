"""Peak memory of multi-reference scoring: one batch vs many batches of the same size.

Each configuration runs in a fresh process and reports its peak resident memory (ru_maxrss), so
the numbers are comparable. With batching over (example, reference) pairs the peak should stay
near the one-batch peak plus the output arrays, however many pairs there are.

    python benchmarks/bench_memory.py [--batch 64] [--refs 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def child(n_examples: int, n_refs: int, batch: int) -> None:
    import numpy as np
    import torch

    import deeplift
    from deeplift import references

    torch.set_num_threads(1)
    sys.path.insert(0, "benchmarks")
    from bench_methods import BPNetLike

    module = BPNetLike().eval()
    rng = np.random.default_rng(0)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n_examples, 1000))].transpose(0, 2, 1).copy()
    model = deeplift.convert(module, torch.from_numpy(x[:2]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores = deeplift.attribute(model, x, references.dinuc_shuffle(n=n_refs, seed=0),
                                method="rescale", batch_size=batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"pairs": n_examples * n_refs, "base_mb": base / 1024, "peak_mb": peak / 1024,
                      "output_mb": scores.nbytes / 2 ** 20}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--refs", type=int, default=20)
    parser.add_argument("--child", nargs=3, type=int)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results = []
    for n_examples in (max(1, args.batch // args.refs), 50 * max(1, args.batch // args.refs)):
        out = subprocess.run([sys.executable, __file__, "--child", str(n_examples), str(args.refs),
                              str(args.batch)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['pairs']:6d} pairs in batches of {args.batch}: peak {r['peak_mb']:7.1f} MB "
              f"(before scoring {r['base_mb']:7.1f} MB, output arrays {r['output_mb']:6.1f} MB)")
    small, large = results
    growth = (large["peak_mb"] - large["base_mb"]) / max(small["peak_mb"] - small["base_mb"], 1e-9)
    print(f"scoring memory, {large['pairs'] // small['pairs']}x the pairs: {growth:.2f}x "
          f"(of which output arrays {large['output_mb'] - small['output_mb']:.1f} MB)")


if __name__ == "__main__":
    main()
