"""Train the bundled example genomics CNN (``deeplift.examples.MotifCNN``).

Simulates DNA sequences with embedded GATA-like / TAL1-like motifs (see
``motif_simulation.py``), trains :class:`MotifCNN` on three binary tasks
("GATA", "TAL1", "GATA_and_TAL1") with a binary cross-entropy loss on the
logits (the input of the model's final sigmoid), reports per-task AUROC on a
held-out simulated set and writes

* ``<out-dir>/motif_cnn.pt``        -- float32 state dict
* ``<out-dir>/motif_examples.npz``  -- held-out example sequences, labels,
  embedded motif positions, PWMs, motif and task names

The defaults reproduce the files shipped in ``src/deeplift/data``::

    cd /path/to/repo && PYTHONPATH=src python examples/train_motif_model.py

Runs on CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
try:
    from deeplift.examples.motif_model import MotifCNN
except ImportError:  # running without PYTHONPATH=src
    sys.path.insert(0, str(REPO / "src"))
    from deeplift.examples.motif_model import MotifCNN

import motif_simulation as sim  # noqa: E402

DEFAULT_OUT = REPO / "src" / "deeplift" / "data"


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties averaged)."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank (1-based) for each group of tied scores
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg_rank, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@torch.no_grad()
def predict_logits(model: MotifCNN, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    out = [
        model.logits(torch.from_numpy(x[i : i + batch_size])).numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


def task_aurocs(labels: np.ndarray, scores: np.ndarray) -> list[float]:
    return [auroc(labels[:, t], scores[:, t]) for t in range(labels.shape[1])]


def pick_examples(labels: np.ndarray, n_examples: int) -> np.ndarray:
    """Indices of ``n_examples`` sequences, balanced over the four label groups."""
    group = labels[:, 0].astype(int) + 2 * labels[:, 1].astype(int)
    per_group = n_examples // 4
    idx = [np.flatnonzero(group == g)[:per_group] for g in range(4)]
    chosen = np.concatenate(idx)
    short = n_examples - chosen.size
    if short > 0:
        rest = np.setdiff1d(np.arange(labels.shape[0]), chosen)[:short]
        chosen = np.concatenate([chosen, rest])
    return np.sort(chosen)


def save_examples(path: Path, data: sim.SimulatedData, idx: np.ndarray) -> None:
    seq_index, motif_id, start, end, strand = [], [], [], [], []
    for new_i, old_i in enumerate(idx):
        for name, s, e, st in data.instances[old_i]:
            seq_index.append(new_i)
            motif_id.append(sim.MOTIF_NAMES.index(name))
            start.append(s)
            end.append(e)
            strand.append(1 if st == "+" else -1)
    arrays = {
        "onehot": data.onehot[idx].astype(np.uint8),
        "labels": data.labels[idx].astype(np.uint8),
        "task_names": np.array(sim.TASK_NAMES),
        "motif_names": np.array(sim.MOTIF_NAMES),
        "motif_seq_index": np.array(seq_index, dtype=np.int32),
        "motif_id": np.array(motif_id, dtype=np.int8),
        "motif_start": np.array(start, dtype=np.int32),
        "motif_end": np.array(end, dtype=np.int32),
        "motif_strand": np.array(strand, dtype=np.int8),
        "background": sim.BACKGROUND.astype(np.float64),
    }
    for name in sim.MOTIF_NAMES:
        arrays[f"pwm_{name}"] = sim.PWMS[name].astype(np.float64)
    np.savez_compressed(path, **arrays)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help="where to write motif_cnn.pt and motif_examples.npz "
                        "(default: src/deeplift/data)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=40000)
    p.add_argument("--n-test", type=int, default=8000,
                   help="held-out sequences for the AUROC report")
    p.add_argument("--n-examples", type=int, default=300,
                   help="held-out sequences bundled in motif_examples.npz")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_ss, test_ss = np.random.SeedSequence(args.seed).spawn(2)

    train = sim.simulate_dataset(args.n_train, rng=np.random.default_rng(train_ss))
    test = sim.simulate_dataset(args.n_test, rng=np.random.default_rng(test_ss))
    print(f"simulated {args.n_train} train / {args.n_test} held-out sequences "
          f"in {time.perf_counter() - t_start:.1f}s; "
          f"train positive rates {train.labels.mean(0).round(3).tolist()}")

    model = MotifCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"MotifCNN with {n_params} parameters")
    x_train = torch.from_numpy(train.onehot)
    y_train = torch.from_numpy(train.labels)
    steps_per_epoch = (args.n_train + args.batch_size - 1) // args.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = nn.BCEWithLogitsLoss()
    shuffle_gen = torch.Generator().manual_seed(args.seed)

    for epoch in range(args.epochs):
        t_epoch = time.perf_counter()
        model.train()
        perm = torch.randperm(args.n_train, generator=shuffle_gen)
        total = 0.0
        for i in range(0, args.n_train, args.batch_size):
            b = perm[i : i + args.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model.logits(x_train[b]), y_train[b])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        test_logits = predict_logits(model, test.onehot)
        test_loss = loss_fn(torch.from_numpy(test_logits), torch.from_numpy(test.labels)).item()
        aucs = task_aurocs(test.labels, test_logits)
        print(f"epoch {epoch + 1:2d}/{args.epochs}  train loss {total / args.n_train:.4f}  "
              f"held-out loss {test_loss:.4f}  AUROC "
              + " ".join(f"{n}={a:.4f}" for n, a in zip(sim.TASK_NAMES, aucs))
              + f"  ({time.perf_counter() - t_epoch:.1f}s)")

    model.eval()
    test_logits = predict_logits(model, test.onehot)
    aucs = task_aurocs(test.labels, test_logits)
    # reference: the best achievable by scanning with the true PWMs
    ideal = [sim.max_scan_scores(test.onehot, m) for m in sim.MOTIF_NAMES]
    ideal_aucs = task_aurocs(test.labels, np.stack([ideal[0], ideal[1], np.minimum(*ideal)], 1))

    idx = pick_examples(test.labels, args.n_examples)
    example_aucs = task_aurocs(test.labels[idx], test_logits[idx])

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.out_dir / "motif_cnn.pt"
    data_path = args.out_dir / "motif_examples.npz"
    state = {k: v.detach().to(torch.float32).contiguous().clone()
             for k, v in model.state_dict().items()}
    torch.save(state, weights_path)
    save_examples(data_path, test, idx)

    elapsed = time.perf_counter() - t_start
    print("held-out AUROC (%d seqs): " % args.n_test
          + ", ".join(f"{n} {a:.4f}" for n, a in zip(sim.TASK_NAMES, aucs)))
    print("true-PWM scan AUROC (reference): "
          + ", ".join(f"{n} {a:.4f}" for n, a in zip(sim.TASK_NAMES, ideal_aucs)))
    print("bundled examples AUROC (%d seqs): " % len(idx)
          + ", ".join(f"{n} {a:.4f}" for n, a in zip(sim.TASK_NAMES, example_aucs)))
    print(f"wrote {weights_path} ({weights_path.stat().st_size} bytes), "
          f"{data_path} ({data_path.stat().st_size} bytes)")
    print(f"total time {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
