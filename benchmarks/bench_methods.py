"""Time DeepLIFT methods against plain autograd input gradients on the same model, same run.

Prints, per model, seconds per call and the ratio to the autograd baseline (forward + backward of
the target logit w.r.t. the inputs). One reference and one target, as in the core issue.

    python benchmarks/bench_methods.py [--batch 64] [--repeats 9] [--threads 2]

Each configuration runs twice, in fresh processes: with the C allocator as it comes, and with
``deeplift.allocator.keep_freed_memory()`` (what the ``deeplift`` command uses), because glibc's
returning and re-faulting of large freed blocks dominates the time of the elementwise rules on
large inputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
from torch import nn

import deeplift


class BPNetLike(nn.Module):
    """One-hot (4, 1000) -> wide conv -> dilated residual convs -> global pooling -> dense head."""

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


def autograd_gradient(module: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = module(x)[:, target].sum()
    (g,) = torch.autograd.grad(out, x)
    return g


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor, repeats: int) -> None:
    """Interleaved rounds (baseline, then every method) so that each ratio compares runs made
    moments apart; the median ratio over rounds is robust to the machine speeding up or slowing
    down between rounds."""
    module.eval()
    model = deeplift.convert(module, x[:2])
    methods = ["gradient", "gradient_x_input", "rescale", "reveal_cancel", "genomics_default"]
    calls = {"autograd input gradient": lambda: autograd_gradient(module, x, 0)}
    for method in methods:
        refs = None if method in ("gradient", "gradient_x_input") else ref
        calls[method] = (lambda method=method, refs=refs: deeplift.attribute(
            model, x, references=refs, method=method, target=0, batch_size=len(x)))
    for fn in calls.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            times[key].append(timed(fn))
    base = times["autograd input gradient"]
    print(f"\n{name}: input {tuple(x.shape)}, {len(model.layer_names)} layers, {repeats} rounds")
    for key, ts in times.items():
        ratios = sorted(t / b for t, b in zip(ts, base))
        print(f"  {key:28s} median {sorted(ts)[len(ts) // 2] * 1e3:8.1f} ms   "
              f"ratio to autograd: median {ratios[len(ratios) // 2]:4.2f}x "
              f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocator", choices=["default", "keep-freed-memory"])
    args = parser.parse_args()
    if args.allocator is None:  # run both allocator settings, each in a fresh process
        for allocator in ("default", "keep-freed-memory"):
            print(f"\n=== C allocator: {allocator} ===", flush=True)
            subprocess.run([sys.executable, __file__, "--allocator", allocator, "--batch", str(args.batch),
                            "--repeats", str(args.repeats), "--threads", str(args.threads)], check=True)
        return
    if args.allocator == "keep-freed-memory":
        from deeplift.allocator import keep_freed_memory
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dna = torch.nn.functional.one_hot(torch.randint(0, 4, (args.batch, 1000)), 4).permute(0, 2, 1).float()
    # one reference shared by every example (a flat background / an all-zero image)
    bench("BPNet-like 1-D CNN", BPNetLike(), dna, torch.full_like(dna[:1], 0.25), args.repeats)
    img = torch.randn(args.batch, 3, 32, 32)
    bench("VGG-like 2-D CNN", vgg_like(), img, torch.zeros_like(img[:1]), args.repeats)


if __name__ == "__main__":
    main()
