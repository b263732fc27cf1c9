"""The bundled example genomics model and data (deeplift.examples.motif_model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deeplift.examples.motif_model import (
    EXAMPLE_PATHS,
    MotifCNN,
    load_example_data,
    load_example_model,
)

# Measured on the shipped files (examples/train_motif_model.py defaults):
# per-task AUROC on the 300 bundled held-out sequences 0.969 / 0.973 / 0.951
# (0.962 / 0.980 / 0.964 on 8000 held-out sequences).  Keep a margin.
MIN_AUROC = 0.92

REPO = Path(__file__).resolve().parents[1]


def _auroc(labels, scores):
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    return (ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@pytest.fixture(scope="module")
def model():
    return load_example_model()


@pytest.fixture(scope="module")
def data():
    return load_example_data()


def test_auroc_helper():
    assert _auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert _auroc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert _auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_bundled_files_exist_and_are_small():
    weights, npz = EXAMPLE_PATHS["weights"], EXAMPLE_PATHS["data"]
    assert weights.is_file() and npz.is_file()
    assert weights.stat().st_size < 600_000
    assert weights.stat().st_size + npz.stat().st_size < 1_000_000
    with np.load(npz, allow_pickle=False) as z:  # no pickled objects inside
        for k in z.files:
            assert z[k].dtype != object


def test_model_structure(model):
    assert isinstance(model, MotifCNN)
    assert not model.training
    kinds = [type(m) for m in model.children()]
    assert kinds == [
        nn.Conv1d, nn.ReLU, nn.Conv1d, nn.ReLU, nn.MaxPool1d, nn.Flatten,
        nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid,
    ]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.zeros(2, 4, 200)
    x[:, 0] = 1.0
    with torch.no_grad():
        probs = model(x)
        logits = model.logits(x)
        seq = nn.Sequential(*model.layers())(x)
    assert probs.shape == (2, 3)
    torch.testing.assert_close(torch.sigmoid(logits), probs)
    torch.testing.assert_close(seq, probs)


def test_data_layout(data):
    x, y = data["onehot"], data["labels"]
    n = x.shape[0]
    assert x.dtype == np.float32 and x.shape == (n, 4, 200) and n >= 100
    np.testing.assert_array_equal(x.sum(axis=1), 1.0)  # exactly one base per position
    assert y.shape == (n, 3) and set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y[:, 2], y[:, 0] * y[:, 1])
    assert data["task_names"] == ["GATA", "TAL1", "GATA_and_TAL1"]
    assert data["motif_names"] == ["GATA", "TAL1"]
    for t in range(3):  # both classes present for every task
        assert 0 < y[:, t].sum() < n


def test_motif_positions_consistent(data):
    n = data["onehot"].shape[0]
    y = data["labels"]
    pwms = data["pwms"]
    seen = {name: np.zeros(n, bool) for name in data["motif_names"]}
    occupied = np.zeros((n, 200), bool)
    assert len(data["motif_positions"]) > 0
    for i, name, start, end, strand in data["motif_positions"]:
        assert 0 <= i < n
        assert 0 <= start < end <= 200
        assert end - start == pwms[name].shape[1]
        assert strand in ("+", "-")
        assert not occupied[i, start:end].any()  # instances do not overlap
        occupied[i, start:end] = True
        seen[name][i] = True
    # labels are exactly "an instance of the motif was embedded"
    np.testing.assert_array_equal(seen["GATA"], y[:, 0].astype(bool))
    np.testing.assert_array_equal(seen["TAL1"], y[:, 1].astype(bool))
    assert len(data["motif_table"]["start"]) == len(data["motif_positions"])


def test_embedded_windows_match_pwm(data):
    """Embedded windows score far higher under their PWM than random windows."""
    x = data["onehot"].astype(np.float64)
    bg = np.asarray(data["background"], dtype=np.float64)[:, None]
    rng = np.random.default_rng(0)
    for name, pwm in data["pwms"].items():
        np.testing.assert_allclose(pwm.sum(axis=0), 1.0)
        lo = np.log2(pwm / bg)
        w = lo.shape[1]
        inst = [(i, s, st) for i, m, s, e, st in data["motif_positions"] if m == name]
        assert inst
        embedded, windows = [], []
        for i, s, st in inst:
            win = x[i, :, s : s + w]
            if st == "-":
                win = win[::-1, ::-1]  # reverse complement (channels A,C,G,T)
            windows.append(win)
            embedded.append((lo * win).sum())
        idx = rng.integers(0, x.shape[0], 2000)
        starts = rng.integers(0, 200 - w + 1, 2000)
        random_scores = [(lo * x[i, :, s : s + w]).sum() for i, s in zip(idx, starts)]
        embedded = np.array(embedded)
        # expected score of a PWM sample is its information content (> 8 bits
        # here); random background windows score well below zero on average
        assert embedded.mean() > np.mean(random_scores) + 8.0
        assert np.mean(embedded > 0) > 0.95
        # the most frequent base at each motif position is the PWM consensus
        counts = np.sum(windows, axis=0)  # (4, w)
        np.testing.assert_array_equal(counts.argmax(axis=0), pwm.argmax(axis=0))


def test_predictions_on_bundled_examples(model, data):
    with torch.no_grad():
        probs = model(torch.from_numpy(data["onehot"])).numpy()
    assert np.all((probs >= 0) & (probs <= 1))
    for t, name in enumerate(data["task_names"]):
        auc = _auroc(data["labels"][:, t], probs[:, t])
        assert auc > MIN_AUROC, (name, auc)


def test_pwms_match_simulation_module(data):
    path = REPO / "examples" / "motif_simulation.py"
    if not path.is_file():
        pytest.skip("examples/motif_simulation.py not available")
    spec = importlib.util.spec_from_file_location("_motif_simulation", path)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    for name in data["motif_names"]:
        np.testing.assert_allclose(data["pwms"][name], sim.PWMS[name])
    np.testing.assert_allclose(data["background"], sim.BACKGROUND)
    # the simulator's PWM scan agrees with the bundled instances
    x = data["onehot"][:20]
    scores = sim.window_scores(x, "GATA")
    for i, m, s, e, st in data["motif_positions"]:
        if i < 20 and m == "GATA":
            lo = np.log2(sim.PWMS["GATA"] / sim.BACKGROUND[:, None])
            win = data["onehot"][i, :, s:e].astype(np.float64)
            if st == "-":
                win = win[::-1, ::-1]
            assert np.isclose(scores[i, 0 if st == "+" else 1, s], (lo * win).sum())


def test_quickstart_example_runs_and_writes_its_files(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    quickstart.main(n_examples=6, out_dir=str(tmp_path))
    printed = capsys.readouterr().out
    assert "largest |summation-to-delta error|" in printed
    for name in ("gata.ohe.npz", "gata.shap.npz", "scores.npz", "logo_example0.png"):
        assert (tmp_path / name).stat().st_size > 0
