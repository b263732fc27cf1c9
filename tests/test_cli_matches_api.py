"""What ``deeplift score`` writes equals ``deeplift.attribute`` on the same inputs, for every option
that changes the numbers; ``deeplift plot`` draws the example and target it names.

Shape checks and the run's self-reported delta cannot catch a command line that ignores
``--method``, ``--n-references`` or ``--hypothetical`` (issue 14): these tests compare numbers.
The command runs in-process through ``main(argv)`` (what the console script calls); the model is
a ``package.module:object`` built from a seed, so the test converts the very same module. The
expected references are made here, straight from ``deeplift.genomics``, not by the command's
reference makers.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import deeplift
from deeplift import genomics, viz
from deeplift.cli import main
from deeplift.io import load_scores, save_scores
from random_models import single_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N, L = 5, 24
MODULE = "cli_api_model:make_net"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small DNA model (conv, max-pool, dense; three logits) importable as MODULE, and inputs."""
    d = tmp_path_factory.mktemp("cli_api")
    (d / "cli_api_model.py").write_text(textwrap.dedent(f"""
        import torch
        from torch import nn

        def make_net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                                 nn.Flatten(), nn.Linear(6 * {L // 2}, 8), nn.ReLU(),
                                 nn.Linear(8, 3)).eval()
    """))
    rng = np.random.default_rng(7)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (N, L))].transpose(0, 2, 1).copy()
    np.save(d / "seqs.npy", x)
    np.save(d / "refs.npy", np.roll(x, 3, axis=2))  # a reference FILE, one per example
    import sys
    sys.path.insert(0, str(d))
    try:
        import cli_api_model
        net = cli_api_model.make_net()
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("cli_api_model", None)
    return {"dir": d, "x": x, "model": deeplift.convert(net, torch.from_numpy(x[:2]))}


def score(files, monkeypatch, *options: str) -> dict:
    """Run ``deeplift score MODULE seqs.npy *options`` in-process; the saved file's contents."""
    d = files["dir"]
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.chdir(d)
    out = d / "out.npz"
    status = main(["score", MODULE, "seqs.npy", *options, "--out", str(out), "--quiet"])
    assert status == 0
    saved = load_scores(out)
    out.unlink()
    return saved


def _shuffled(x: np.ndarray, kind: str, n: int, seed: int) -> np.ndarray:
    batch = genomics.dinuc_shuffle_batch if kind == "dinuc-shuffle" else genomics.shuffle_batch
    return np.asarray(batch(x, n, seed=seed, layout="channels_first"))  # (N, R, 4, L)


def _expected(files, **kwargs) -> np.ndarray:
    return deeplift.attribute(files["model"], files["x"], **kwargs)


def _assert_same(saved: dict, expected: np.ndarray, what: str) -> None:
    got = saved["scores"]
    assert got.shape == expected.shape, what
    scale = float(np.abs(expected).max())
    assert scale > 0, what
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale, err_msg=what)


@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "genomics_default", "gradient",
                                    "guided_backprop", "integrated_gradients"])
def test_score_method_equals_attribute_with_that_method(files, monkeypatch, method):
    saved = score(files, monkeypatch, "--method", method, "--target", "1", "--steps", "9")
    assert saved["metadata"]["method"] == method
    _assert_same(saved, _expected(files, method=method, target=1, steps=9), method)


def test_methods_give_different_numbers_here(files):
    """The comparisons above could not tell methods apart if this model scored them alike."""
    results = [_expected(files, method=m, target=1)
               for m in ("rescale", "reveal_cancel", "gradient", "guided_backprop")]
    for a in range(len(results)):
        for b in range(a + 1, len(results)):
            assert not np.allclose(results[a], results[b], atol=1e-4), (a, b)


@pytest.mark.parametrize("kind, n, seed", [("shuffle", 3, 5), ("dinuc-shuffle", 2, 11),
                                           ("dinuc-shuffle", 4, 11)])
def test_score_shuffled_references_use_their_kind_count_and_seed(files, monkeypatch, kind, n, seed):
    saved = score(files, monkeypatch, "--references", kind, "--n-references", str(n),
                  "--seed", str(seed), "--target", "all")
    refs = _shuffled(files["x"], kind, n, seed)
    assert saved["metadata"]["n_references"] == n and saved["metadata"]["seed"] == seed
    _assert_same(saved, _expected(files, references=refs, target="all"), f"{kind} x{n} seed {seed}")


def test_reference_counts_and_seeds_change_the_numbers_here(files):
    x = files["x"]
    base = _expected(files, references=_shuffled(x, "dinuc-shuffle", 2, 11))
    assert not np.allclose(base, _expected(files, references=_shuffled(x, "dinuc-shuffle", 4, 11)))
    assert not np.allclose(base, _expected(files, references=_shuffled(x, "dinuc-shuffle", 2, 12)))


@pytest.mark.parametrize("kind", ["zeros", "background", "FILE"])
def test_score_other_references_equal_attribute(files, monkeypatch, kind):
    x = files["x"]
    if kind == "FILE":
        saved = score(files, monkeypatch, "--references", "refs.npy")
        refs = np.load(files["dir"] / "refs.npy")
    else:
        saved = score(files, monkeypatch, "--references", kind)
        refs = None if kind == "zeros" else np.broadcast_to(
            np.array([0.3, 0.2, 0.2, 0.3], dtype=np.float32)[:, None], x.shape[1:])
    _assert_same(saved, _expected(files, references=refs), kind)


@pytest.mark.parametrize("target, expected_target", [("2", 2), ("0,2", [0, 2]), ("all", "all")])
def test_score_target_equals_attribute_target(files, monkeypatch, target, expected_target):
    saved = score(files, monkeypatch, "--target", target, "--method", "reveal_cancel")
    _assert_same(saved, _expected(files, target=expected_target, method="reveal_cancel"), target)


def test_score_target_layer_equals_attribute_target_layer(files, monkeypatch):
    # a Sequential's layers are named "0", "1", ...: the command reads a number as an index
    index = 6  # the dense ReLU's output (8 units)
    saved = score(files, monkeypatch, "--target-layer", str(index), "--target", "3")
    assert saved["metadata"]["target_layer"] == files["model"].layer_names[index]
    _assert_same(saved, _expected(files, target_layer=index, target=3), "target layer")


@pytest.mark.parametrize("method", ["rescale", "genomics_default"])
def test_score_hypothetical_equals_attribute_hypothetical(files, monkeypatch, method):
    saved = score(files, monkeypatch, "--hypothetical", "--method", method, "--references",
                  "dinuc-shuffle", "--n-references", "2", "--seed", "3")
    assert saved["metadata"]["hypothetical"] is True
    refs = _shuffled(files["x"], "dinuc-shuffle", 2, 3)
    expected = _expected(files, references=refs, hypothetical=True, method=method)
    _assert_same(saved, expected, "hypothetical")
    # and they are not the plain contributions (which are zero off the observed bases)
    assert np.abs(expected * (1 - files["x"])).max() > 0


def test_score_dtype_float64_equals_attribute_of_the_float64_model(files, monkeypatch):
    saved = score(files, monkeypatch, "--dtype", "float64", "--method", "reveal_cancel")
    assert saved["scores"].dtype == np.float64 and saved["metadata"]["dtype"] == "float64"
    import copy
    model64 = copy.deepcopy(files["model"]).to(torch.float64)
    expected = deeplift.attribute(model64, files["x"].astype(np.float64), method="reveal_cancel")
    np.testing.assert_allclose(saved["scores"], expected, rtol=0, atol=1e-12 * np.abs(expected).max())


# ------------------------------------------------------------------------------------- plot


def _record(monkeypatch, name: str) -> list[dict]:
    """Record what ``deeplift.viz.<name>`` is given (and still draw)."""
    calls: list[dict] = []
    real = getattr(viz, name)

    def recording(scores, *args, **kwargs):
        calls.append({"scores": np.array(scores), **kwargs})
        return real(scores, *args, **kwargs)

    monkeypatch.setattr(viz, name, recording)
    return calls


def test_plot_draws_the_named_examples_and_target_of_a_scores_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (6, 30))].transpose(0, 2, 1).copy()
    scores = rng.normal(size=(6, 3, 4, 30)).astype(np.float32) * x[:, None]  # every example differs
    path = tmp_path / "s.npz"
    save_scores(path, scores, x, metadata={"targets": [0, 4, 7], "target_axis": True,
                                           "method": "rescale", "layout": "channels_first"})
    calls = _record(monkeypatch, "plot_logo")
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(path), "--examples", "1,4", "--target", "4", "--window", "30",
                 "--out-dir", "plots"]) == 0
    assert len(calls) == 2
    for call, i in zip(calls, (1, 4)):
        np.testing.assert_array_equal(call["scores"], scores[i, 1])  # target 4 is the second
        np.testing.assert_array_equal(call["onehot"], x[i])
        title = call["ax"].get_title()
        assert title.startswith(f"example {i}, target 4,"), title
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "s_example1_target_4.png", "s_example4_target_4.png"]


def test_plot_window_shows_the_positions_around_the_largest_score(tmp_path, monkeypatch):
    x = np.zeros((2, 4, 300), dtype=np.float32)
    x[:, 0] = 1
    scores = np.zeros((2, 4, 300), dtype=np.float32)
    scores[0, 0, 40], scores[1, 0, 250] = 5.0, -7.0  # the peak of each example
    path = tmp_path / "w.npz"
    save_scores(path, scores, x, metadata={"targets": [0], "target_axis": False})
    calls = _record(monkeypatch, "plot_logo")
    assert main(["plot", str(path), "--examples", "0,1", "--window", "50",
                 "--out-dir", str(tmp_path / "p")]) == 0
    first, second = calls
    assert first["scores"].shape == (4, 50) and first["scores"][0].min() == 0
    assert first["scores"][0, 40 - 15] == 5.0  # window 15..64 around position 40
    assert second["scores"][0].min() == -7.0 and "positions 225-274" in second["ax"].get_title()


def test_plot_heatmap_draws_the_named_example(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(4, 3, 6, 5)).astype(np.float32)
    scores = rng.normal(size=(4, 3, 6, 5)).astype(np.float32)
    path = tmp_path / "img.npz"
    save_scores(path, scores, images, metadata={"targets": [1], "target_axis": False})
    calls = _record(monkeypatch, "plot_heatmap")
    assert main(["plot", str(path), "--examples", "2", "--out-dir", str(tmp_path / "p")]) == 0
    (call,) = calls
    np.testing.assert_array_equal(call["scores"], scores[2])
    np.testing.assert_array_equal(call["image"], images[2])
