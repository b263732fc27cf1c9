"""Cost of every method as a ratio to a plain autograd input gradient of the same model and batch,
measured in one plain process (no allocator tuning, nothing set in the environment), plus peak
memory and the peers side by side — one command, one table.

    python benchmarks/bench_methods.py [--batch 64] [--rounds 9] [--threads 2] [--device cpu|cuda]
        [--no-memory] [--no-peers] [--models bpnet,vgg,image] [--row NAME ...]

Rows (the goals are those of issue 10):
- rescale, genomics_default, gradient_x_input (goal ≤ 1.5×), reveal_cancel (≤ 3×): one shared
  reference, one target;
- ``dinuc x10``: genomics_default averaged over 10 dinucleotide-shuffled references per example
  (≤ 12×), BPNet-like model only;
- ``integrated_gradients``: 50 steps (≤ 50×), next to Captum's IntegratedGradients;
- ``all 10 targets``: rescale for every class of the image CNN in one call (≤ 1 + 0.6·10 = 7×);
- peers (``pip install '.[bench]'``): Captum DeepLift, DeepLiftShap (10 references) and
  IntegratedGradients, tangermeme's deep_lift_shap (10 references), where installed;
- ``the gradient again (noise)``: the baseline timed as a row — its ratio is 1 and its spread
  is the machine's and the method's own, the floor of every row's spread.

Timing: interleaved rounds (every row, again and again, each timed right after a baseline call
of its own, and each of the two right after an untimed call of itself when shorter than 2 s),
the median of each row's per-round ratio to that baseline call; ``spread`` is the
largest over the smallest per-round ratio; ``faults``, the median memory per call that the OS
had to map in afresh (minor page faults: in a plain process glibc returns freed memory at the
top of its heap, and a call that allocates it again pays for zeroed pages). Memory: each row
runs in a fresh process, once to warm up and once measured: the peak of torch's allocator during
the call (CPU: from the profiler's allocation events; CUDA: the allocator's peak), as a ratio to
the same for the autograd gradient. ``rescale, 4x the examples`` runs 4 batches: its memory
equal to ``rescale``'s shows it is flat over batches. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable

import torch
from torch import nn

import deeplift
from deeplift import references

# ---------------------------------------------------------------------------------------------
# models


class BPNetLike(nn.Module):
    """One-hot (4, L) -> wide conv -> dilated residual convs -> global pooling -> dense head."""

    def __init__(self, channels: int = 64, n_dilated: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, channels, 21, padding=10)
        self.dilated = nn.ModuleList(
            nn.Conv1d(channels, channels, 3, padding=2 ** i, dilation=2 ** i) for i in range(1, n_dilated + 1))
        self.head = nn.Sequential(nn.Linear(channels, 32), nn.ReLU(), nn.Linear(32, n_out))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for conv in self.dilated:
            h = h + torch.relu(conv(h))
        return self.head(h.mean(dim=-1))


def vgg_like(n_out: int = 10) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, n_out))


def image_cnn(n_out: int = 10) -> nn.Module:
    """A 10-class image classifier with max pooling (CIFAR-sized)."""
    return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, n_out))


def make_case(kind: str, batch: int, device: str, length: int = 1000):
    """(module, inputs, one shared reference) on ``device``."""
    torch.manual_seed(0)
    if kind == "bpnet":
        module = BPNetLike()
        x = nn.functional.one_hot(torch.randint(0, 4, (batch, length)), 4).permute(0, 2, 1).float()
        ref = torch.full_like(x[:1], 0.25)
    else:
        module = vgg_like() if kind == "vgg" else image_cnn()
        x = torch.randn(batch, 3, 32, 32)
        ref = torch.zeros_like(x[:1])
    return module.eval().to(device), x.contiguous().to(device), ref.to(device)


#: integrated gradients: interpolation points per forward pass, for both libraries — the batch
#: itself, so that memory stays that of one batch (all 50 steps at once would need tens of GB
#: for the BPNet-like model at batch 64)

NAMES = {"bpnet": "BPNet-like 1 kb", "vgg": "VGG-like 32x32", "image": "image CNN, 10 classes"}

# ---------------------------------------------------------------------------------------------
# the rows


def autograd_gradient(module: nn.Module, x: torch.Tensor, target: int = 0) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(module(x)[:, target].sum(), x)
    return g


def rows(kind: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor, peers: bool
         ) -> dict[str, tuple[Callable[[], object], str]]:
    """name -> (call, goal as text). The first row is the baseline."""
    model = deeplift.convert(module, x[:2])
    n = len(x)

    def ours(method, refs=ref, target=0, **kw):
        return lambda: deeplift.attribute(model, x, refs, method=method, target=target,
                                          batch_size=kw.pop("batch_size", n), **kw)
    out = {"autograd input gradient": (lambda: autograd_gradient(module, x), "1")}
    # the baseline timed as a row: its spread is that of the machine and the timing alone, the
    # floor under every other row's spread
    out["the gradient again (noise)"] = (lambda: autograd_gradient(module, x), "spread <= 1.3")
    out["gradient_x_input"] = (ours("gradient_x_input", refs=None), "<= 1.5")
    shuffles = references.dinuc_shuffle(n=10, seed=0)(x.cpu()).to(x.device) if kind == "bpnet" else None
    # the DeepLIFT rows twice: fused rule kernels (what fuse="auto" runs once a process has done
    # enough work, and what fuse=True always runs) and eager PyTorch ops (a short script)
    for fuse, label in ((True, ""), (False, " [eager]")):
        out["rescale" + label] = (ours("rescale", fuse=fuse), "<= 1.5")
        out["genomics_default" + label] = (ours("genomics_default", fuse=fuse), "<= 1.5")
        out["reveal_cancel" + label] = (ours("reveal_cancel", fuse=fuse), "<= 3")
        if kind == "bpnet":
            out["dinuc x10 (genomics_default)" + label] = (ours(
                "genomics_default", refs=shuffles, fuse=fuse), "<= 12")
        if kind == "image":
            out["all 10 targets (rescale)" + label] = (ours("rescale", target="all", fuse=fuse), "<= 7")
    out["integrated_gradients 50 steps"] = (ours("integrated_gradients", steps=50), "<= 50")
    x4 = x.repeat(4, *([1] * (x.ndim - 1)))
    out["rescale, 4x the examples"] = (lambda: deeplift.attribute(
        model, x4, ref, method="rescale", target=0, batch_size=n, fuse=True), "memory as rescale")
    if peers:
        out.update(peer_rows(kind, module, x, ref))
    return out


def peer_rows(kind: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor) -> dict:
    out: dict = {}
    try:
        import captum.attr as ca
    except ImportError:
        print("(captum not installed: pip install '.[bench]' for the peers)", file=sys.stderr)
        ca = None
    if ca is not None:
        baseline = ref.expand_as(x).contiguous()
        out["captum DeepLift"] = (lambda: ca.DeepLift(module).attribute(x, baseline, target=0), "")
        out["captum IntegratedGradients 50"] = (lambda: ca.IntegratedGradients(module).attribute(
            x, baseline, target=0, n_steps=50, method="riemann_middle",
            internal_batch_size=len(x)), "")
        if kind == "bpnet":
            shuffles = references.dinuc_shuffle(n=10, seed=0)(x.cpu())[0].to(x.device)
            out["captum DeepLiftShap x10"] = (lambda: ca.DeepLiftShap(module).attribute(
                x, shuffles, target=0), "")
    if kind == "bpnet":
        try:
            from tangermeme.deep_lift_shap import deep_lift_shap
        except ImportError:
            print("(tangermeme not installed: pip install '.[bench]' for it)", file=sys.stderr)
        else:
            out["tangermeme deep_lift_shap x10"] = (lambda: deep_lift_shap(
                module, x, target=0, n_shuffles=10, batch_size=len(x), device=x.device.type,
                verbose=False), "")
    return out


# ---------------------------------------------------------------------------------------------
# measuring


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def page_faults() -> int:
    """Minor page faults of this process so far (memory the OS had to map in afresh)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn: Callable[[], object], device: str) -> tuple[float, int]:
    """(seconds, minor page faults) of one call."""
    sync(device)
    start, faulted = time.perf_counter(), page_faults()
    fn()
    sync(device)
    return time.perf_counter() - start, page_faults() - faulted


#: a row shorter than this is timed right after an untimed call of itself (a longer one repeats
#: its own passes within the call)
WARM_SECONDS = 2.0


def time_rows(calls: dict, rounds: int, device: str) -> dict[str, tuple[float, float, float, float]]:
    """name -> (median seconds, median ratio to the baseline, spread of the ratio, median MB
    of memory page-faulted in per call).

    In every round each row is timed right after a baseline call of its own, and each of the
    two right after an untimed call of itself (rows over ``WARM_SECONDS``: their own passes
    warm them): the ratio compares two calls a moment apart, each as it runs when repeated, not
    a row with a baseline timed minutes earlier, after other work, on a machine whose speed
    drifts. (A call after different work runs slower: glibc gave back the memory it needs.)"""
    warnings.simplefilter("ignore")  # the peers warn on every call (hooks, convergence deltas)
    warm = {}
    for key, (fn, _) in calls.items():  # warm-up
        start = time.perf_counter()
        fn()
        warm[key] = time.perf_counter() - start < WARM_SECONDS
    base_key, (baseline, _) = next(iter(calls.items()))
    times: dict[str, list[float]] = {k: [] for k in calls}
    ratios: dict[str, list[float]] = {k: [] for k in calls}
    faults: dict[str, list[int]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, (fn, _) in calls.items():
            baseline()
            base_seconds, base_faults = _timed(baseline, device)
            times[base_key].append(base_seconds)
            faults[base_key].append(base_faults)
            if key == base_key:
                continue
            if warm[key]:
                fn()
            seconds, faulted = _timed(fn, device)
            times[key].append(seconds)
            ratios[key].append(seconds / base_seconds)
            faults[key].append(faulted)
    ratios[base_key] = [1.0]
    page_mb = resource.getpagesize() / 2 ** 20
    return {key: (statistics.median(ts), statistics.median(ratios[key]),
                  max(ratios[key]) / min(ratios[key]), statistics.median(faults[key]) * page_mb)
            for key, ts in times.items()}


def allocator_peak(call: Callable[[], object]) -> float:
    """Peak bytes held by torch's CPU allocator during ``call`` above what it held before, from
    the profiler's allocation events (every tensor, the peers' included; freed memory the C
    library keeps for reuse does not count, so the figure does not depend on what ran before)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak)


def memory_child(kind: str, row: str, batch: int, device: str, threads: int) -> None:
    """Run one row in this fresh process, once to warm up and once measured; print the peak
    memory of the measured call above what was held before it (MB): torch's allocator on CPU
    (``allocator_peak``), the CUDA allocator's peak on a GPU."""
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    module, x, ref = make_case(kind, batch, device)
    calls = rows(kind, module, x, ref, peers=True)
    calls[row][0]()  # warm-up: compiled kernels and one-time caches are not a call's memory
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        calls[row][0]()
        torch.cuda.synchronize()
        rise = torch.cuda.max_memory_allocated() - before
    else:
        rise = allocator_peak(calls[row][0])
    print(json.dumps({"rise_mb": max(rise, 0) / 2 ** 20}))


def peak_memory(kind: str, names: list[str], batch: int, device: str, threads: int) -> dict[str, float]:
    out = {}
    for row in names:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", kind, row, "--batch",
                               str(batch), "--device", device, "--threads", str(threads)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out[row] = float("nan")
            continue
        out[row] = json.loads(proc.stdout.strip().splitlines()[-1])["rise_mb"]
    return out


def gpu_throughput(rounds: int) -> list[str]:
    """Sequences per second of a BPNet-size model at 1 kb and 2 kb, 10 references, and the
    summation-to-delta error of bfloat16/float16 models scored with float32 rule arithmetic."""
    lines = []
    for length in (1000, 2000):
        module, x, _ = make_case("bpnet", 128, "cuda", length)
        model = deeplift.convert(module, x[:2])
        refs = references.dinuc_shuffle(n=10, seed=0)(x.cpu()).cuda()
        call = (lambda: deeplift.attribute(model, x, refs, method="genomics_default", batch_size=1280))
        median = time_rows({"run": (call, "")}, rounds, "cuda")["run"][0]
        lines.append(f"  {length} bp, 10 references: {len(x) / median:8.0f} sequences/s")
    for dtype in (torch.bfloat16, torch.float16):
        module, x, ref = make_case("bpnet", 128, "cuda")
        model = deeplift.convert(module, x[:2]).to(dtype)
        _, delta = deeplift.attribute(model, x.to(dtype), ref.to(dtype), method="genomics_default",
                                      return_delta=True)
        lines.append(f"  {str(dtype).replace('torch.', '')} model: largest |summation-to-delta "
                     f"error| {float(delta.abs().max()):.2g}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", default="bpnet,vgg,image")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the memory column")
    parser.add_argument("--row", action="append", dest="rows", metavar="NAME",
                        help="run this row (with the baseline); repeatable; default: every row")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "ROW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.batch, args.device, args.threads)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_methods: --device cuda, but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, batch {args.batch}, "
          f"{args.rounds} interleaved rounds, plain process")
    header = (f"{'model':22s} {'row':32s} {'ms':>9s} {'ratio':>7s} {'spread':>7s} {'faults':>8s} "
              f"{'memory':>8s}  goal")
    print(header)
    print("-" * len(header))
    for kind in args.models.split(","):
        module, x, ref = make_case(kind, args.batch, args.device)
        calls = rows(kind, module, x, ref, peers=not args.no_peers)
        if args.rows:
            wanted = set(args.rows)
            calls = {k: v for i, (k, v) in enumerate(calls.items()) if i == 0 or k in wanted}
        timing = ({k: (float("nan"),) * 4 for k in calls} if args.memory_only
                  else time_rows(calls, args.rounds, args.device))
        memory = {} if args.no_memory else peak_memory(kind, list(calls), args.batch, args.device,
                                                       args.threads)
        base_mem = memory.get("autograd input gradient")
        for name, (seconds, ratio, spread, faulted) in timing.items():
            mem = (f"{memory[name] / base_mem:7.2f}x" if base_mem and name in memory
                   and memory[name] == memory[name] else "      -")
            print(f"{NAMES[kind]:22s} {name:32s} {seconds * 1e3:9.1f} {ratio:6.2f}x {spread:7.2f} "
                  f"{faulted:6.0f}MB {mem:>8s}  {calls[name][1]}")
    if args.device == "cuda":
        print("GPU throughput:")
        for line in gpu_throughput(args.rounds):
            print(line)


if __name__ == "__main__":
    main()
