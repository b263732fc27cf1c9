"""Genome-scale scoring (``deeplift score --genome ...``) on a small synthetic genome.

The genome (three chromosomes of random sequence with some N) and the BED (200 regions, some
running off chromosome ends) are written by the tests. The bundled example model (input (4, 200))
is scored in-process through ``deeplift.cli.main``; only the SIGKILL test starts a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyfaidx", reason="genome-scale scoring needs pyfaidx (the genome extra)")
h5py = pytest.importorskip("h5py")

import deeplift  # noqa: E402
from deeplift.cli import main  # noqa: E402
from deeplift.genome.regions import iter_regions, region_seed  # noqa: E402
from deeplift.genomics import dinuc_shuffle_batch, one_hot_encode  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
WIDTH = 200
SIZES = {"chr1": 6000, "chr2": 3500, "chrM": 150}
COMMON = ["--width", str(WIDTH), "--references", "dinuc-shuffle", "--n-references", "2",
          "--chunk-size", "25", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Genome FASTA (+ its sequences) and a BED of 200 regions, some near chromosome ends."""
    d = tmp_path_factory.mktemp("genome")
    rng = np.random.default_rng(11)
    seqs = {}
    with open(d / "g.fa", "w") as f:
        for chrom, n in SIZES.items():
            s = "".join(rng.choice(list("ACGTN"), n, p=[0.245, 0.245, 0.245, 0.245, 0.02]))
            seqs[chrom] = s
            f.write(f">{chrom}\n" + "".join(s[i:i + 60] + "\n" for i in range(0, n, 60)))
    lines = []
    for i in range(200):
        chrom = ["chr1", "chr2", "chrM"][i % 3]
        n = SIZES[chrom]
        if i % 10 == 0:      # at a chromosome's start or end: the window runs off it
            start = 0 if i % 20 == 0 else n - 30
            end = start + 30
        else:
            start = int(rng.integers(0, n - 50))
            end = min(n, start + int(rng.integers(20, 300)))
        lines.append(f"{chrom}\t{start}\t{end}\tr{i}\n")
    (d / "r.bed").write_text("track name=test\n" + "".join(lines))
    import torch

    from deeplift.examples.motif_model import load_example_model
    program = torch.export.export(load_example_model().eval(), (torch.zeros(2, 4, WIDTH),))
    torch.export.save(program, str(d / "bundled.pt2"))
    return {"dir": d, "genome": d / "g.fa", "regions": d / "r.bed", "seqs": seqs, "model": d / "bundled.pt2"}


def score(data: dict, out: Path, *extra: str, models: tuple[str, ...] | None = None) -> None:
    """``deeplift score`` in-process; by default with the bundled model saved as a .pt2 archive
    (loading it is much faster than converting the module again in every run)."""
    models = (str(data["model"]),) if models is None else models
    argv = ["score", *models, "--genome", str(data["genome"]), "--regions", str(data["regions"]),
            "--out", str(out), *COMMON, *extra]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def single_run(data) -> Path:
    out = data["dir"] / "single.h5"
    score(data, out, "--bigwig", str(data["dir"] / "single.bw"), "--modisco", str(data["dir"] / "modisco"))
    return out


def read_all(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file (soft links included as their targets)."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: f.attrs[k] for k in f.attrs}
    return out


def assert_same_file(a: Path, b: Path, rounding: bool = False) -> None:
    """The same datasets and attributes, bit for bit; with ``rounding``, floating datasets equal
    to float32 rounding: for files made in processes with other thread counts, whose CPU kernels
    may sum in another order (seen on an AMD EPYC: 3e-8 in the scores, single run against a
    resumed run whose first chunks were made with one thread, or two Ray workers)."""
    fa, fb = read_all(a), read_all(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        if key == "attrs":
            assert fa[key].keys() == fb[key].keys()
            for k in fa[key]:
                assert np.array_equal(fa[key][k], fb[key][k]), k
        elif rounding and np.asarray(fa[key]).dtype.kind == "f":
            np.testing.assert_allclose(fa[key], fb[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert np.array_equal(fa[key], fb[key]), key


def window_onehot(data: dict, chrom: str, start: int) -> np.ndarray:
    s = data["seqs"][chrom]
    letters = "".join(s[p] if 0 <= p < len(s) else "N" for p in range(start, start + WIDTH))
    return one_hot_encode(letters, layout="channels_first")


def bundled_model():
    import torch

    from deeplift.examples.motif_model import load_example_model
    return deeplift.convert(load_example_model(), example_inputs=torch.zeros(2, 4, WIDTH))


def expected_scores(data: dict, regions: list, models: list, revcomp: bool = False) -> np.ndarray:
    """Hypothetical contributions straight from deeplift.attribute, region by region seeds."""
    x = np.stack([window_onehot(data, r.chrom, r.start) for r in regions])
    refs = np.concatenate([dinuc_shuffle_batch(x[i:i + 1], 2, seed=region_seed(r.chrom, r.start, r.end, 0))
                           for i, r in enumerate(regions)])
    total = 0
    for m in models:
        total = total + deeplift.attribute(m, x, references=refs, target=[0], hypothetical=True)[:, 0]
        if revcomp:
            rc = deeplift.attribute(m, x[:, ::-1, ::-1].copy(), references=refs[:, :, ::-1, ::-1].copy(),
                                    target=[0], hypothetical=True)[:, 0]
            total = total + rc[:, ::-1, ::-1]
    return total / (len(models) * (2 if revcomp else 1))


# -- regions and the genome ------------------------------------------------------------------


def test_windows_centre_on_summit_or_middle(tmp_path):
    bed = tmp_path / "p.narrowPeak"
    bed.write_text("chr1\t100\t300\tp1\t0\t.\t1\t1\t1\t40\n"
                   "chr1\t100\t300\tp2\t0\t.\t1\t1\t1\t-1\n"
                   "# comment\nchr2\t10\t21\n")
    r = list(iter_regions(bed, 10))
    assert [(x.start, x.end) for x in r] == [(135, 145), (195, 205), (10, 20)]
    assert [x.name for x in r] == ["p1", "p2", "chr2:10-21"]
    assert [x.index for x in r] == [0, 1, 2]


def test_bad_bed_line_is_named(tmp_path):
    from deeplift.errors import InputError
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t5\t10\nchr1\tfive\t10\n")
    with pytest.raises(InputError, match="line 2"):
        list(iter_regions(bed, 10))


def test_windows_past_chromosome_ends_read_as_n(data):
    from deeplift.genome.fasta import Genome
    g = Genome(data["genome"])
    s = data["seqs"]["chrM"]
    assert g.sequence("chrM", -5, 5) == "NNNNN" + s[:5]
    assert g.sequence("chrM", 140, 160) == s[140:] + "N" * 10
    assert g.sequence("chrM", 200, 203) == "NNN"


# -- the scores file ----------------------------------------------------------------------------


def test_genome_scores_equal_in_memory_attribute(data, single_run):
    regions = list(iter_regions(data["regions"], WIDTH))
    expected = expected_scores(data, regions, [bundled_model()])
    f = read_all(single_run)
    onehot = np.stack([window_onehot(data, r.chrom, r.start) for r in regions])
    assert f["raw/seq"].dtype == np.int8 and np.array_equal(f["raw/seq"], onehot)
    assert f["shap/seq"].shape == (200, 4, WIDTH)
    np.testing.assert_allclose(f["shap/seq"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f["projected_shap/seq"], f["shap/seq"] * onehot, rtol=0, atol=0)
    assert [c.decode() if isinstance(c, bytes) else c for c in f["regions/chrom"]] == [r.chrom for r in regions]
    assert np.array_equal(f["regions/start"], [r.start for r in regions])
    assert np.array_equal(f["regions/bed_end"], [r.bed_end for r in regions])
    assert (f["regions/start"] < 0).any() and (f["regions/end"] > SIZES["chrM"]).any()
    assert 0 < f["max_abs_delta"].max() < 1e-4
    assert f["attrs"]["complete"]
    meta = json.loads(f["attrs"]["metadata_json"])
    assert meta["max_abs_delta"] == f["max_abs_delta"].max()
    assert meta["unknown_positions"] == int((onehot.sum(axis=1) == 0).sum()) > 0


def test_ensemble_and_revcomp_average_in_one_pass(data, tmp_path):
    import torch

    from deeplift.examples.motif_model import load_example_model
    modules = [load_example_model(), load_example_model()]
    with torch.no_grad():
        for p in modules[1].parameters():
            p.mul_(0.8)
    paths = []
    for k, module in enumerate(modules):
        path = tmp_path / f"fold{k}.pt2"
        torch.export.save(torch.export.export(module.eval(), (torch.zeros(2, 4, WIDTH),)), str(path))
        paths.append(str(path))
    few = dict(data, regions=tmp_path / "few.bed")
    few["regions"].write_text("".join(data["regions"].read_text().splitlines(True)[1:13]))
    out = tmp_path / "ens.h5"
    score(few, out, "--revcomp-average", models=tuple(paths))
    regions = list(iter_regions(few["regions"], WIDTH))
    models = [deeplift.convert(m, example_inputs=torch.zeros(2, 4, WIDTH)) for m in modules]
    with h5py.File(out, "r") as f:
        got = f["shap/seq"][()]
    np.testing.assert_allclose(got, expected_scores(data, regions, models, revcomp=True), rtol=1e-4, atol=1e-6)
    one = expected_scores(data, regions, models[:1], revcomp=True)
    assert np.abs(got - one).max() > 1e-3  # the second model really counts


def test_several_targets_get_one_group_per_task(data, tmp_path):
    few = dict(data, regions=tmp_path / "few.bed")
    few["regions"].write_text("".join(data["regions"].read_text().splitlines(True)[1:9]))
    out = tmp_path / "tasks.h5"
    score(few, out, "--target", "0,2", "--float16", models=())  # the bundled model: named tasks
    regions = list(iter_regions(few["regions"], WIDTH))
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["task_names"]) == ["GATA", "GATA_and_TAL1"]
        assert "shap" not in f
        gata = f["tasks/GATA/shap/seq"]
        assert gata.dtype == np.float16
        np.testing.assert_allclose(gata[()], expected_scores(data, regions, [bundled_model()]),
                                   rtol=2e-3, atol=2e-3)
        assert np.array_equal(f["tasks/GATA_and_TAL1/raw/seq"][()], f["raw/seq"][()])


# -- resume, shards ------------------------------------------------------------------------------


def test_killed_run_resumes_to_identical_file(data, single_run, tmp_path):
    out = tmp_path / "killed.h5"
    parts = tmp_path / "killed.h5.parts"
    argv = ["score", str(data["model"]), "--genome", str(data["genome"]), "--regions",
            str(data["regions"]), "--out", str(out), *COMMON]
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "deeplift", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while len(list(parts.glob("chunk_*.npz"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the run recorded no chunks in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    recorded = len(list(parts.glob("chunk_*.npz")))
    assert 2 <= recorded < 8  # killed mid-way: 8 chunks of 25 regions
    score(data, out)  # the same command again
    assert not parts.exists()
    assert_same_file(out, single_run, rounding=True)  # (its first chunks made with one thread)


def test_run_stopped_while_assembling_finishes_on_rerun(data, tmp_path, monkeypatch):
    import deeplift.genome.run as run_module
    few = dict(data, regions=tmp_path / "few.bed")
    few["regions"].write_text("".join(data["regions"].read_text().splitlines(True)[1:41]))
    score(few, tmp_path / "whole.h5")
    real_write_file = run_module.write_file

    def dies_half_way(out, n, width, task_names, dtype, attrs, chunks):
        def two_then_die():
            for k, chunk in enumerate(chunks):
                if k == 1:
                    raise KeyboardInterrupt  # stands for a kill in the middle of the assembly
                yield chunk
        return real_write_file(out, n, width, task_names, dtype, attrs, two_then_die())

    monkeypatch.setattr(run_module, "write_file", dies_half_way)
    out = tmp_path / "stopped.h5"
    assert main(["score", str(data["model"]), "--genome", str(data["genome"]), "--regions",
                 str(few["regions"]), "--out", str(out), *COMMON]) == 130
    assert not out.exists() and len(list((tmp_path / "stopped.h5.parts").glob("chunk_*"))) == 2
    monkeypatch.setattr(run_module, "write_file", real_write_file)
    score(few, out)
    assert_same_file(out, tmp_path / "whole.h5")


def test_resume_refuses_a_run_with_other_options(data, single_run, tmp_path, capsys):
    from deeplift.genome.store import PartsRecord
    out = tmp_path / "other.h5"
    PartsRecord(out, {"method": "reveal_cancel"})
    argv = ["score", str(data["model"]), "--genome", str(data["genome"]), "--regions", str(data["regions"]),
            "--out", str(out), *COMMON]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other options" in err and "method: 'reveal_cancel' then, 'rescale' now" in err
    # a finished file with other options is never overwritten
    before = single_run.read_bytes()
    assert main(argv[:-len(COMMON)] + ["--out", str(single_run), *COMMON, "--seed", "3"]) == 2
    assert "made with other options" in capsys.readouterr().err
    assert single_run.read_bytes() == before


def test_rerun_of_a_finished_command_does_nothing(data, single_run, capsys):
    before = single_run.stat().st_mtime_ns
    score(data, single_run)
    assert "scored 0 of 200 regions" in capsys.readouterr().out
    assert single_run.stat().st_mtime_ns == before


def test_shards_merge_to_the_single_run(data, single_run, tmp_path):
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, path in enumerate(shards):
        score(data, path, "--shard", f"{i}/2")
    with h5py.File(shards[1], "r") as f:  # 8 chunks of 25: shard 1 holds chunks 4..7
        assert f.attrs["shard_index"] == 1 and f.attrs["region_offset"] == 100
        assert f["raw/seq"].shape[0] == 100
    merged = tmp_path / "merged.h5"
    assert main(["merge", str(merged), *map(str, shards[::-1])]) == 0
    assert_same_file(merged, single_run)
    assert main(["merge", str(tmp_path / "m2.h5"), str(shards[1])]) == 2


# -- exports ---------------------------------------------------------------------------------


def test_bigwig_holds_mean_of_overlapping_windows(data, single_run):
    pyBigWig = pytest.importorskip("pyBigWig")
    f = read_all(single_run)
    per_base = f["projected_shap/seq"].astype(np.float64).sum(axis=1)
    chroms = [c.decode() if isinstance(c, bytes) else c for c in f["regions/chrom"]]
    bw = pyBigWig.open(str(data["dir"] / "single.bw"))
    try:
        assert bw.chroms() == SIZES
        for chrom, size in SIZES.items():
            sums, counts = np.zeros(size), np.zeros(size)
            for i in np.flatnonzero(np.array(chroms) == chrom):  # brute force, window by window
                for k in range(WIDTH):
                    p = f["regions/start"][i] + k
                    if 0 <= p < size:
                        sums[p] += per_base[i, k]
                        counts[p] += 1
            got = np.array(bw.values(chrom, 0, size))
            covered = counts > 0
            assert np.array_equal(~np.isnan(got), covered)
            np.testing.assert_allclose(got[covered], sums[covered] / counts[covered], rtol=1e-5, atol=1e-6)
    finally:
        bw.close()


def test_modisco_inputs_have_its_layout(data, single_run):
    f = read_all(single_run)
    with np.load(data["dir"] / "modisco" / "ohe.npz") as z:
        assert z.files == ["arr_0"]
        ohe = z["arr_0"]
    with np.load(data["dir"] / "modisco" / "shap.npz") as z:
        shap = z["arr_0"]
    assert ohe.shape == shap.shape == (200, 4, WIDTH)
    assert np.array_equal(ohe, f["raw/seq"].astype(np.float32))
    assert np.array_equal(shap, f["shap/seq"])


@pytest.mark.slow  # importing modisco-lite (numba, scikit-learn) takes ~10 s
def test_modiscolite_reads_the_npz_files_and_the_h5(data, single_run):
    """TF-MoDISco-lite's own loaders (when it is installed: it is heavy, so not a test extra)."""
    cli = pytest.importorskip("modiscolite.cli", reason="modisco-lite is not installed")
    f = read_all(single_run)
    for name, expected in (("ohe.npz", f["raw/seq"]), ("shap.npz", f["shap/seq"])):
        path = data["dir"] / "modisco" / name
        assert cli._read_npz_member(path, "arr_0") is not None  # its fast path accepts the file
        assert np.array_equal(cli._load_input(path), expected)
    with h5py.File(single_run, "r") as h:  # what 'modisco motifs -i scores.h5' reads
        assert h["shap"]["seq"].shape == h["raw"]["seq"].shape == (200, 4, WIDTH)


# -- errors ------------------------------------------------------------------------------------


def test_unknown_chromosome_fails_before_scoring(data, tmp_path, capsys):
    bed = tmp_path / "typo.bed"
    bed.write_text("chr1\t100\t200\n" * 30 + "chrX\t5\t50\n")
    argv = ["score", str(data["model"]), "--genome", str(data["genome"]), "--regions", str(bed),
            "--width", "200", "--out", str(tmp_path / "x.h5"), "--chunk-size", "10"]
    assert main(argv) == 2
    assert "region 31 (chrX:5-50) is on 'chrX'" in capsys.readouterr().err
    assert not (tmp_path / "x.h5.parts").exists()


def test_workers_without_ray_is_a_clear_error(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    argv = ["score", str(data["model"]), "--genome", str(data["genome"]), "--regions",
            str(data["regions"]), "--width", "200", "--out", str(tmp_path / "x.h5"), "--workers", "2"]
    assert main(argv) == 2
    assert "need Ray, which is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra, message", [
    (["--method", "gradient"], "no hypothetical contributions"),
    (["--shard", "3/3"], "0 <= I < N"),
    (["--references", "shuffled"], "makes references per region"),
    (["--shard", "0/2", "--bigwig", "x.bw"], "--shard scores a part"),
    (["--shard", "0/2"], "gets no regions"),  # 200 regions are one chunk of 256: all in shard 1
])
def test_bad_genome_options_are_one_line_errors(data, tmp_path, capsys, extra, message):
    argv = ["score", str(data["model"]), "--genome", str(data["genome"]), "--regions",
            str(data["regions"]), "--width", "200", "--out", str(tmp_path / "x.h5"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeplift: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()


# -- Ray -------------------------------------------------------------------------------------------


def test_ray_two_workers_equal_single_process(data, single_run, tmp_path):
    """Runs wherever Ray is installed (the test extra installs it, so CI runs it)."""
    pytest.importorskip("ray", reason="Ray is optional (pip install 'deeplift[ray]')")
    out = tmp_path / "ray.h5"
    score(data, out, "--workers", "2")
    assert_same_file(out, single_run, rounding=True)  # (each worker with its own threads)


def test_every_output_gets_the_permissions_the_umask_gives(data, single_run):
    """Written through a temporary file and renamed, but not left at mkstemp's 0600."""
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    for path in (single_run, data["dir"] / "single.bw", data["dir"] / "modisco" / "ohe.npz",
                 data["dir"] / "modisco" / "shap.npz"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
