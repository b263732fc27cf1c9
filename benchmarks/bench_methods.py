"""Time DeepLIFT methods against plain autograd input gradients on the same model, same run.

Prints, per model, seconds per call and the ratio to the autograd baseline (forward + backward of
the target logit w.r.t. the inputs). One reference and one target, as in the core issue.

    python benchmarks/bench_methods.py [--batch 64] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
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


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(name: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor, repeats: int) -> None:
    module.eval()
    model = deeplift.convert(module, x[:2])
    base = best_time(lambda: autograd_gradient(module, x, 0), repeats)
    print(f"\n{name}: input {tuple(x.shape)}, {len(model.layer_names)} layers")
    print(f"  {'autograd input gradient':28s} {base * 1e3:8.1f} ms   1.00x")
    for method in ["gradient", "gradient_x_input", "rescale", "reveal_cancel", "genomics_default"]:
        refs = None if method in ("gradient", "gradient_x_input") else ref
        t = best_time(lambda: deeplift.attribute(model, x, references=refs, method=method, target=0,
                                                 batch_size=len(x)), repeats)
        print(f"  {method:28s} {t * 1e3:8.1f} ms   {t / base:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dna = torch.nn.functional.one_hot(torch.randint(0, 4, (args.batch, 1000)), 4).permute(0, 2, 1).float()
    bench("BPNet-like 1-D CNN", BPNetLike(), dna, torch.full_like(dna, 0.25), args.repeats)
    img = torch.randn(args.batch, 3, 32, 32)
    bench("VGG-like 2-D CNN", vgg_like(), img, torch.zeros_like(img), args.repeats)


if __name__ == "__main__":
    main()
