"""Genome-scale scoring throughput and memory: regions/s and peak RSS, one process vs Ray workers.

Writes a synthetic genome (random sequence) and BEDs of N regions of 1 kb, then runs
``deeplift score [MODEL] --genome ... --regions ... --width W --out ...`` in a fresh process per
configuration and reports regions/s (from the command's own summary line) and the peak resident
memory of the whole process tree (the command plus, with --workers, Ray's processes), sampled from
/proc every 0.2 s. Memory should be flat between the sizes: regions stream in chunks.

    python benchmarks/bench_genome.py                      # 10k and 100k regions, bundled model
    python benchmarks/bench_genome.py --sizes 200,1000 --workers 0   # a smoke run

With the bundled model (input (4, 200)) each 1 kb region is scored on its central 200 bases
(--width 200); ``--model bench_methods:BPNetLike --width 1000`` scores whole 1 kb windows with the
BPNet-like model of bench_methods.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def write_genome(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for chrom in ("chrA", "chrB"):
            seq = np.array(list("ACGT"))[rng.integers(0, 4, size // 2)]
            f.write(f">{chrom}\n")
            for i in range(0, len(seq), 80 * 800):
                block = "".join(seq[i:i + (80 * 800)])
                f.write("\n".join(block[k:k + 80] for k in range(0, len(block), 80)) + "\n")


def write_bed(path: Path, n: int, genome_size: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    half = genome_size // 2
    chroms = rng.integers(0, 2, n)
    starts = rng.integers(0, half - 1000, n)
    with open(path, "w") as f:
        for i, (c, s) in enumerate(zip(chroms, starts)):
            f.write(f"{'chrA' if c == 0 else 'chrB'}\t{s}\t{s + 1000}\tregion{i}\n")


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            pid, ppid = int(entry), int(fields[1])
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            children.setdefault(ppid, []).append(pid)
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run(cmd: list[str], env: dict) -> tuple[str, float, float]:
    """(stdout, seconds, peak tree RSS in MB) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return out, time.perf_counter() - start, peak[0] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="numbers of regions (10000,100000)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for the second run (0: skip)")
    parser.add_argument("--model", default=None, help="MODEL argument (default: the bundled example)")
    parser.add_argument("--width", type=int, default=200, help="window scored per region (200)")
    parser.add_argument("--n-references", type=int, default=10)
    parser.add_argument("--genome-size", type=int, default=10_000_000)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_genome_"))
    work.mkdir(parents=True, exist_ok=True)
    genome = work / "genome.fa"
    if not genome.exists():
        write_genome(genome, args.genome_size)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE), env.get("PYTHONPATH", "")])
    modes = [("1 process", [])] + ([(f"Ray x{args.workers}", ["--workers", str(args.workers)])]
                                   if args.workers else [])
    print(f"model {args.model or 'bundled example'}, --width {args.width}, dinuc-shuffle x{args.n_references}")
    for n in (int(s) for s in args.sizes.split(",")):
        bed = work / f"regions_{n}.bed"
        write_bed(bed, n, args.genome_size)
        for label, extra in modes:
            out = work / f"scores_{n}_{label.replace(' ', '_')}.h5"
            for p in (out, Path(str(out) + ".parts")):
                subprocess.run(["rm", "-rf", str(p)], check=True)
            cmd = [sys.executable, "-m", "deeplift", "score", *([args.model] if args.model else []),
                   "--genome", str(genome), "--regions", str(bed), "--width", str(args.width),
                   "--out", str(out), "--references", "dinuc-shuffle", "--n-references",
                   str(args.n_references), "--quiet", *extra]
            stdout, seconds, peak_mb = run(cmd, env)
            rate = re.search(r"\(([\d.]+) regions/s\)", stdout)
            print(f"{n:>7d} regions, {label:<10s}: {rate.group(1) if rate else '?':>8s} regions/s "
                  f"(scoring), {n / seconds:8.1f} regions/s end to end, peak RSS {peak_mb:8.0f} MB, "
                  f"file {out.stat().st_size / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
