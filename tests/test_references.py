"""References: reference makers, batched multi-reference averaging, hypothetical scores, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deeplift
from deeplift import references
from deeplift.io import load_scores, save_modisco_inputs, save_scores


def _dna_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(6, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8, 8),
                         nn.ReLU(), nn.Linear(8, 2)).double().eval()


def _onehot(n: int, length: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.eye(4)[rng.integers(0, 4, (n, length))].transpose(0, 2, 1).copy()


@pytest.fixture(scope="module")
def model():
    return deeplift.convert(_dna_model(), torch.zeros(2, 4, 20, dtype=torch.float64))


@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "genomics_default"])
def test_averaging_over_references_equals_mean_of_single_reference_runs(model, method):
    x = _onehot(6)
    refs = references.dinuc_shuffle(n=4, seed=3)(x)  # (N, R, 4, L)
    averaged = deeplift.attribute(model, x, refs, method=method, target="all", batch_size=5)
    singles = [deeplift.attribute(model, x, refs[:, k], method=method, target="all") for k in range(4)]
    np.testing.assert_allclose(averaged, np.mean(singles, axis=0), rtol=0, atol=1e-10)


def test_shared_reference_set_runs_forward_fewer_rows_than_pairs(model):
    n, r, batch = 12, 5, 8
    x = _onehot(n)
    shared = references.shuffle(n=r, seed=1)(x[:1])  # (1, R, 4, L): one set for all examples
    before = model.rows_forwarded
    scores = deeplift.attribute(model, x, shared, method="rescale", batch_size=batch)
    rows = model.rows_forwarded - before
    n_batches = -(-n * r // batch)
    assert rows <= 1 + r + n + n_batches  # shape probe + the set once + each example ~once
    assert rows < 2 * n * r               # what running every (example, reference) pair needs
    expected = np.mean([deeplift.attribute(model, x, shared[:, k], method="rescale")
                        for k in range(r)], axis=0)
    np.testing.assert_allclose(scores, expected, atol=1e-10)


def test_per_example_reference_sets_forward_each_example_once_per_batch(model):
    n, r = 8, 6
    x = _onehot(n)
    refs = references.dinuc_shuffle(n=r, seed=0)(x)
    before = model.rows_forwarded
    deeplift.attribute(model, x, refs, method="rescale", batch_size=n * r)
    first = model.rows_forwarded - before
    assert first in (n + n * r, 1 + n + n * r)  # (a one-row shape probe) + examples once + refs
    before = model.rows_forwarded
    deeplift.attribute(model, x, refs, method="rescale", batch_size=n * r)
    assert model.rows_forwarded - before == n + n * r  # the shapes are known: no probe again


def test_return_delta_gives_every_pair_before_averaging(model):
    x = _onehot(5)
    refs = references.dinuc_shuffle(n=3, seed=2)(x)
    _, delta = deeplift.attribute(model, x, refs, method="reveal_cancel", target=[0, 1],
                                  return_delta=True, batch_size=4)
    assert delta.shape == (5, 3, 2)
    assert np.abs(delta).max() < 1e-9


def test_reference_maker_seed_is_reproducible_and_overridable(model):
    x = _onehot(4)
    a = deeplift.attribute(model, x, references.dinuc_shuffle(n=3, seed=5))
    b = deeplift.attribute(model, x, references.dinuc_shuffle(n=3, seed=5))
    c = deeplift.attribute(model, x, references.dinuc_shuffle(n=3, seed=5), seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_background_reference_matches_explicit_array(model):
    x = _onehot(3)
    freqs = np.array([0.3, 0.2, 0.2, 0.3])
    a = deeplift.attribute(model, x, references.background(freqs))
    b = deeplift.attribute(model, x, np.broadcast_to(freqs[:, None], x.shape[1:]).copy())
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_hypothetical_scores_projected_on_observed_bases_are_the_contributions(model):
    x = _onehot(5)
    refs = references.dinuc_shuffle(n=4, seed=0)(x)
    hyp = deeplift.attribute(model, x, refs, method="genomics_default", target=1, hypothetical=True)
    actual = deeplift.attribute(model, x, refs, method="genomics_default", target=1)
    np.testing.assert_allclose((hyp * x).sum(1), actual.sum(1), atol=1e-10)
    assert np.abs(hyp * (1 - x)).max() > 0  # unobserved bases get scores of their own


def test_scores_files_round_trip_and_modisco_layout(tmp_path, model):
    x = _onehot(4)
    s = deeplift.attribute(model, x, references.dinuc_shuffle(n=2, seed=0), hypothetical=True)
    for name in ("s.npz", "s.h5"):
        path = save_scores(tmp_path / name, s, x, metadata={"method": "rescale"})
        back = load_scores(path)
        np.testing.assert_array_equal(back["scores"], s)
        np.testing.assert_array_equal(back["inputs"], x)
        assert back["metadata"]["method"] == "rescale"
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (4, 4, 20)
    ohe, shap = save_modisco_inputs(tmp_path / "run", x, s)
    assert np.load(ohe)["arr_0"].shape == np.load(shap)["arr_0"].shape == (4, 4, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ohe.npz", "run.shap.npz", "s.h5", "s.npz"]


def test_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(deeplift.DeepLiftError, match="unknown output format"):
        save_scores(tmp_path / "scores.txt", np.zeros((2, 3)))
    assert list(tmp_path.iterdir()) == []


def test_reference_makers_refuse_non_sequence_inputs():
    with pytest.raises(deeplift.DeepLiftError, match="one-hot"):
        references.dinuc_shuffle(n=2)(np.zeros((3, 5)))


def test_many_targets_in_small_batches_equal_one_target_at_a_time(model):
    # with batch_size 1 the 2 targets x 1 pair fit one pass; force chunking with many targets
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(80, 40)).double().eval()
    wide = deeplift.convert(net, torch.zeros(2, 4, 20, dtype=torch.float64))
    x = _onehot(3)
    together = deeplift.attribute(wide, x, method="rescale", target="all", batch_size=1)
    singles = np.stack([deeplift.attribute(wide, x, method="rescale", target=t) for t in range(40)], 1)
    assert together.shape == (3, 40, 4, 20)
    np.testing.assert_allclose(together, singles, atol=1e-12)
