"""End-to-end tests of the ``deeplift`` command (``python -m deeplift``), run as subprocesses.

Most of the time is process start-up (importing torch), so the independent runs are started
together when the module's fixtures are built (``start_cli``) and each test waits for its own.
The bundled example is scored once; the other models are tiny. The table of bad inputs runs
in-process through ``main(argv)`` (what the console script calls), with one real process checking
the same contract end to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from deeplift.io import load_scores, save_scores

# Keras 3 internals call np.array(variable) without the numpy-2 copy keyword; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SRC = Path(__file__).resolve().parents[1] / "src"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd: Path, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *map(str, path)])
    env["KERAS_BACKEND"] = "torch"
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, "-m", "deeplift", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


_POOL = ThreadPoolExecutor(max_workers=4)


def start_cli(*args: str, cwd: Path, path: tuple[Path, ...] = (),
              after: "Future | None" = None) -> "Future[subprocess.CompletedProcess]":
    """Run the command in the background (once ``after`` has finished); ``.result()`` waits."""
    def job() -> subprocess.CompletedProcess:
        if after is not None:
            after.result()  # submitted earlier, so already running or done: no deadlock
        return run_cli(*args, cwd=cwd, path=path)
    return _POOL.submit(job)


@pytest.fixture(scope="module", autouse=True)
def _start_everything(bundled, keras_files, torch_files) -> None:
    """Build every fixture (and so start every background run) before the first test."""


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def summary_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def one_hot(idx: np.ndarray) -> np.ndarray:
    """(N, L) base indices -> (N, L, 4) one-hot (channels last)."""
    return np.eye(4, dtype=np.float32)[idx]


def write_fasta(path: Path, seqs: list[str]) -> None:
    path.write_text("".join(f">seq{i} test record\n{s[:30]}\n{s[30:]}\n" for i, s in enumerate(seqs)))


# ------------------------------------------------------------------------------ bundled example


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("bundled")
    score = start_cli("score", cwd=cwd)
    plot = start_cli("plot", "deeplift_scores.npz", "--examples", "0,3", "--target", "TAL1",
                     "--out-dir", "plots", cwd=cwd, after=score)
    return {"cwd": cwd, "score": score, "check": start_cli("check", cwd=cwd), "plot": plot}


def test_bundled_example_scores_find_the_embedded_motifs(bundled):
    cwd, proc = bundled["cwd"], bundled["score"].result()
    assert_ok(proc)
    saved = load_scores(cwd / "deeplift_scores.npz")
    assert saved["scores"].shape == (300, 3, 4, 200)
    assert saved["inputs"].shape == (300, 4, 200)
    meta = saved["metadata"]
    assert meta["method"] == "genomics_default" and meta["references"] == "dinuc-shuffle"
    assert meta["n_references"] == 10 and meta["seed"] == 0
    assert meta["task_names"] == ["GATA", "TAL1", "GATA_and_TAL1"] and meta["targets"] == [0, 1, 2]
    assert meta["max_abs_delta"] < 1e-3
    aurocs = dict(re.findall(r"^AUROC (\S+): ([0-9.]+)", proc.stdout, re.M))
    assert set(aurocs) == {"GATA", "TAL1", "GATA_and_TAL1"}, proc.stdout
    assert all(float(v) > 0.6 for v in aurocs.values()), aurocs
    assert re.match(r"scored 300 examples in [0-9.]+ s \([0-9.]+ examples/s\); largest "
                    r"\|summation-to-delta error\| [0-9.e+-]+$", summary_line(proc))


def test_plot_writes_a_logo_per_chosen_example(bundled):
    cwd, proc = bundled["cwd"], bundled["score"].result()
    assert_ok(proc)
    plot = bundled["plot"].result()
    assert_ok(plot)
    written = [Path(cwd, line.split(" ", 1)[1]) for line in plot.stdout.splitlines()
               if line.startswith("wrote ")]
    assert [p.name for p in written] == ["deeplift_scores_example0_TAL1.png",
                                         "deeplift_scores_example3_TAL1.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_check_lists_the_bundled_models_layers_and_rules(bundled):
    proc = bundled["check"].result()
    assert_ok(proc)
    out = proc.stdout
    for name in ("conv1", "relu1", "pool", "fc1", "relu3", "fc2", "sigmoid"):
        assert re.search(rf"^{name}\s", out, re.M), out
    # genomics default: rescale after a convolution, reveal_cancel after a dense layer
    assert re.search(r"^relu1\s+ReLU\s+conv1\s+rescale / reveal_cancel / rescale$", out, re.M), out
    assert re.search(r"^relu3\s+ReLU\s+fc1\s+rescale / reveal_cancel / reveal_cancel$", out, re.M), out
    assert "unsupported ops: none" in out
    assert "forward pass: matches the source model" in out


# ------------------------------------------------------------------------------ model formats


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict | None:
    """A tiny Keras Conv1D model on (L=50, 4) one-hot, saved as .h5, with .npy and FASTA inputs;
    None when keras is not installed."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return None
    d = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((50, 4)),
        L.Conv1D(6, 5, padding="same", activation="relu", name="conv"),
        L.MaxPooling1D(5, name="pool"),
        L.Flatten(name="flat"),
        L.Dense(8, activation="relu", name="dense"),
        L.Dense(2, name="logits"),
        L.Activation("sigmoid", name="prob"),
    ])
    model.save(d / "model.h5")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (7, 50))
    np.save(d / "seqs.npy", one_hot(idx))
    seqs = ["".join("ACGT"[i] for i in row) for row in idx]
    seqs[2] = seqs[2][:5] + "N" + seqs[2][6:20] + "r" + seqs[2][21:]  # two non-ACGT letters
    write_fasta(d / "seqs.fa", seqs)
    npy = start_cli("score", "model.h5", "seqs.npy", "--method", "reveal_cancel", "--target", "all",
                    "--out", "npy_scores.npz", cwd=d)
    fasta = start_cli("score", "model.h5", "seqs.fa", "--method", "genomics_default", "--references",
                      "dinuc-shuffle", "--n-references", "3", "--out", "fa_scores.h5", cwd=d)
    return {"dir": d, "npy": npy, "fasta": fasta}


def test_score_keras_file_from_npy(keras_files):
    if keras_files is None:
        pytest.skip("keras is not installed")
    d, proc = keras_files["dir"], keras_files["npy"].result()
    assert_ok(proc)
    saved = load_scores(d / "npy_scores.npz")
    assert saved["scores"].shape == (7, 2, 50, 4)
    assert np.array_equal(saved["inputs"], np.load(d / "seqs.npy"))
    assert saved["metadata"]["max_abs_delta"] < 1e-4
    assert summary_line(proc).startswith("scored 7 examples")


def test_score_keras_file_from_fasta_in_the_models_layout(keras_files):
    if keras_files is None:
        pytest.skip("keras is not installed")
    d, proc = keras_files["dir"], keras_files["fasta"].result()
    assert_ok(proc)
    saved = load_scores(d / "fa_scores.h5")
    x = saved["inputs"]
    assert x.shape == (7, 50, 4) and saved["metadata"]["layout"] == "channels_last"
    expected = np.load(d / "seqs.npy")
    assert np.array_equal(x[[0, 1, 3, 4, 5, 6]], expected[[0, 1, 3, 4, 5, 6]])
    assert x[2, 5].sum() == 0 and x[2, 20].sum() == 0  # N and r: all-zero rows
    assert saved["scores"].shape == (7, 50, 4)
    assert "2 letters other than ACGT" in summary_line(proc)


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory) -> dict:
    """A .pt2 archive of a small DNA model, an image model module on PYTHONPATH, and inputs."""
    import torch
    d = tmp_path_factory.mktemp("torch")
    (d / "tinymodels.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class ImageNet(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

        def make_net():
            return ImageNet()

        class Unsupported(nn.Module):
            def forward(self, x):
                return torch.sort(x, dim=1).values.sum(1)
    """))
    torch.manual_seed(0)
    dna = torch.nn.Sequential(torch.nn.Conv1d(4, 5, 5, padding=2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(5 * 40, 3)).eval()
    rng = np.random.default_rng(1)
    x = np.ascontiguousarray(one_hot(rng.integers(0, 4, (6, 40))).transpose(0, 2, 1))
    np.save(d / "dna.npy", x)
    torch.export.save(torch.export.export(dna, (torch.from_numpy(x[:2]),)), d / "dna.pt2")
    np.save(d / "images.npy", rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    sys.path.insert(0, str(d))
    try:
        import tinymodels
        torch.save(tinymodels.ImageNet().state_dict(), d / "image_weights.pt")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("tinymodels", None)
    pt2 = start_cli("score", "dna.pt2", "dna.npy", "--target", "0,2", "--out", "pt2.npz", cwd=d)
    python = start_cli("score", "tinymodels:make_net", "images.npy", "--weights", "image_weights.pt",
                       "--method", "integrated_gradients", "--steps", "16", "--target", "1",
                       "--out", "img.npz", cwd=d, path=(d,))
    heatmaps = start_cli("plot", "img.npz", "--examples", "1", "--out-dir", "maps", cwd=d, after=python)
    wrong_shape = start_cli("score", "dna.pt2", "images.npy", "--out", "never.npz", cwd=d)
    return {"dir": d, "pt2": pt2, "python": python, "heatmaps": heatmaps, "wrong_shape": wrong_shape}


def test_score_torch_export_archive_from_npy(torch_files):
    d, proc = torch_files["dir"], torch_files["pt2"].result()
    assert_ok(proc)
    saved = load_scores(d / "pt2.npz")
    assert saved["scores"].shape == (6, 2, 4, 40)
    assert saved["metadata"]["targets"] == [0, 2] and saved["metadata"]["max_abs_delta"] < 1e-4


def test_score_python_object_with_weights_then_plot_heatmaps(torch_files):
    d, proc = torch_files["dir"], torch_files["python"].result()
    assert_ok(proc)
    saved = load_scores(d / "img.npz")
    assert saved["scores"].shape == (4, 3, 8, 8) and saved["metadata"]["model"] == "tinymodels:make_net"
    plot = torch_files["heatmaps"].result()
    assert_ok(plot)
    png = d / "maps" / "img_example1_target_1.png"
    assert plot.stdout.strip() == f"wrote {Path('maps') / png.name}"
    assert png.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------ errors


BAD_RUNS = [
    ("missing model file", ["score", "nope.pt2", "dna.npy"], "model file nope.pt2 does not exist"),
    ("missing inputs file", ["score", "dna.pt2", "nope.npy"], "inputs file nope.npy does not exist"),
    ("wrong shape", ["score", "dna.pt2", "images.npy"], "have shape (4, 3, 8, 8) but the model"),
    ("swapped axes", ["score", "dna.pt2", "dna_cl.npy"], "transpose them"),
    ("model does not load", ["score", "broken.pt2", "dna.npy"], "is not a torch.export archive"),
    ("keras file does not load", ["score", "broken.h5", "dna.npy"], "broken.h5 does not load"),
    ("unsupported layer", ["score", "tinymodels:Unsupported", "dna.npy"], "unsupported op: op aten.sort"),
    ("unsupported layer in check", ["check", "tinymodels:Unsupported", "--input-shape", "4,40"],
     "unsupported op: op aten.sort"),
    ("module without input shape", ["check", "tinymodels:ImageNet"], "add --input-shape"),
    ("bad method", ["score", "dna.pt2", "dna.npy", "--method", "deeplift"], "unknown method 'deeplift'"),
    ("bad target", ["score", "dna.pt2", "dna.npy", "--target", "9"], "--target 9 is out of range"),
    ("bad reference kind", ["score", "dna.pt2", "dna.npy", "--references", "random"],
     "--references random is neither"),
    ("bad out suffix", ["score", "dna.pt2", "dna.npy", "--out", "scores.csv"], "unknown suffix '.csv'"),
    ("unequal FASTA records", ["score", "dna.pt2", "ragged.fa"], "record 'b' has 6 bases but the first"),
    ("not a FASTA file", ["score", "dna.pt2", "headless.fa"], "before the first '>' header"),
    ("missing scores file", ["plot", "nope.npz"], "scores file nope.npz does not exist"),
    ("no such example", ["plot", "small.npz", "--examples", "0,99"], "the file holds examples 0..5"),
]


@pytest.fixture(scope="module")
def bad_files(torch_files) -> Path:
    d = torch_files["dir"]
    np.save(d / "dna_cl.npy", np.load(d / "dna.npy").transpose(0, 2, 1))
    (d / "broken.pt2").write_text("not an archive")
    (d / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (d / "ragged.fa").write_text(">a\nACGTACGT\n>b\nACGTAC\n")
    (d / "headless.fa").write_text("ACGT\n>x\nACGT\n")
    x = np.load(d / "dna.npy")
    save_scores(d / "small.npz", np.zeros_like(x), x, metadata={"targets": [0], "target_axis": False})
    return d


@pytest.mark.parametrize("args, expected", [case[1:] for case in BAD_RUNS],
                         ids=[case[0] for case in BAD_RUNS])
def test_bad_input_gives_one_error_line_and_no_output(bad_files, args, expected, capsys, monkeypatch):
    """In-process (``main(argv)`` is what the console script calls) to keep the module fast; the
    subprocess test below checks the same contract through a real process."""
    from deeplift.cli import main

    monkeypatch.chdir(bad_files)
    monkeypatch.syspath_prepend(str(bad_files))
    before = set(bad_files.iterdir())
    extra = ["--out", "out.npz"] if args[0] == "score" and "--out" not in args else []
    status = main([*args, *extra])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("deeplift: error: "), captured.err
    assert "; " in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert set(bad_files.iterdir()) == before  # no output file, no temporary file left behind


def test_an_error_in_a_real_process_is_one_line_with_status_2(torch_files):
    proc = torch_files["wrong_shape"].result()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("deeplift: error: inputs images.npy have shape (4, 3, 8, 8)")
    assert not (torch_files["dir"] / "never.npz").exists()


def test_debug_shows_the_traceback(bad_files, monkeypatch):
    from deeplift.cli import CliError, main

    monkeypatch.chdir(bad_files)
    with pytest.raises(CliError, match="model file nope.pt2 does not exist"):
        main(["score", "nope.pt2", "dna.npy", "--debug"])


def test_score_runs_the_model_forward_once_before_scoring(tmp_path, monkeypatch):
    """The plan reuses what conversion learnt: before the first batch, the source module runs
    forward once on real tensors (the conversion check) and the converted model once."""
    import deeplift.engine
    import deeplift.examples.motif_model as motif
    import deeplift.graph
    from deeplift.cli import main

    calls = {"module": 0, "model": 0, "at_scoring": None}
    make = motif.load_example_model

    def counting_model():
        module = make()

        def count(mod, args):
            if not any(type(a).__name__ == "FakeTensor" for a in args):  # not torch.export's tracing
                calls["module"] += 1
        module.register_forward_pre_hook(count)
        return module

    forward_all = deeplift.graph.Model.forward_all
    run = deeplift.engine.PairRunner.run

    def counting_forward_all(self, *args, **kwargs):
        calls["model"] += 1
        return forward_all(self, *args, **kwargs)

    def noting_run(self, *args, **kwargs):
        calls["at_scoring"] = (calls["module"], calls["model"])
        return run(self, *args, **kwargs)

    monkeypatch.setattr(motif, "load_example_model", counting_model)
    monkeypatch.setattr(deeplift.graph.Model, "forward_all", counting_forward_all)
    monkeypatch.setattr(deeplift.engine.PairRunner, "run", noting_run)
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--quiet", "--n-references", "2", "--out", str(tmp_path / "s.npz")]) == 0
    assert calls["at_scoring"] == (1, 1)


def test_method_names_are_normalised_like_the_python_api(tmp_path, monkeypatch):
    from deeplift.cli import main
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rc.npz"
    assert main(["score", "--quiet", "--method", "revealcancel", "--n-references", "1",
                 "--out", str(out)]) == 0
    assert load_scores(out)["metadata"]["method"] == "reveal_cancel"


def test_check_trace_reports_every_layers_conservation_at_float_rounding(tmp_path, capsys):
    from deeplift.cli import main
    from deeplift.examples.motif_model import load_example_data
    np.save(tmp_path / "x.npy", load_example_data()["onehot"][:5])
    assert main(["check", "--trace", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    table = out[out.index("conservation per layer"):].splitlines()[2:]
    names = [row.split()[0] for row in table]
    assert names == ["conv1", "relu1", "conv2", "relu2", "pool", "flatten", "fc1", "relu3", "fc2"]
    errors = [float(v) for row in table for v in row.split()[1:]]
    assert len(errors) == 27 and max(errors) < 1e-5  # float32 rounding, every layer and method
