"""One converted model scored from several threads at once gives the serial results.

A model is shared by a web service's request threads, a thread pool or Ray actors with threads, so
nothing a call computes may live on the model or its layers (issue 14: a max-pool argmax memo on
the layer made concurrent calls raise ``KeyError`` or route through another call's indices).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import deeplift
from deeplift.methods import METHODS

N_THREADS, N_CALLS = 6, 2


def _pooling_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(3),
                         nn.Conv1d(8, 6, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(6 * 4, 10), nn.ReLU(), nn.Linear(10, 3)).double().eval()


def _inputs(k: int, n: int) -> np.ndarray:
    """Different data for every (thread, call), with random references of other maxima."""
    rng = np.random.default_rng(1000 + k)
    return rng.normal(size=(n, 4, 24))


@pytest.fixture(scope="module")
def model():
    return deeplift.convert(_pooling_model(), torch.zeros(2, 4, 24, dtype=torch.float64))


def _run_threads(work, n_threads: int) -> list:
    """Start ``n_threads`` threads together (a barrier), return each one's result or exception."""
    results: list = [None] * n_threads
    barrier = threading.Barrier(n_threads)

    def body(k: int) -> None:
        barrier.wait()
        try:
            results[k] = work(k)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[k] = exc

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("method", sorted(METHODS))
def test_concurrent_calls_on_one_model_equal_serial_results(model, method):
    sizes = [3 + (k % 4) for k in range(N_THREADS * N_CALLS)]  # varied batch shapes per call
    data = [_inputs(k, n) for k, n in enumerate(sizes)]
    refs = [_inputs(10_000 + k, n) for k, n in enumerate(sizes)]
    kwargs = dict(method=method, target=[0, 2], batch_size=4, steps=8)

    def score(k: int) -> np.ndarray:
        return deeplift.attribute(model, data[k], refs[k], **kwargs)

    serial = [score(k) for k in range(len(data))]

    def thread_work(t: int) -> list:
        return [(k, score(k)) for k in range(t, len(data), N_THREADS)]

    outcomes = _run_threads(thread_work, N_THREADS)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, f"{len(errors)} of {N_THREADS} threads failed, first: {errors[0]!r}"
    checked = 0
    for results in outcomes:
        for k, got in results:
            # float64; summation order may differ when threads share torch's intra-op pool
            np.testing.assert_allclose(got, serial[k], rtol=1e-10, atol=1e-12,
                                       err_msg=f"call {k} ({method})")
            checked += 1
    assert checked == len(data)


def test_module_converted_from_several_threads_at_once_scores_like_serial():
    """``attribute`` on an nn.Module converts it on first use; torch.export swaps the module's
    parameters for fake tensors while tracing, so concurrent first calls must not trace together."""
    x = _inputs(0, 4)
    outcomes = _run_threads(lambda k: deeplift.attribute(module, x), N_THREADS)
    module_serial = deeplift.attribute(_pooling_model(), x)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, f"{len(errors)} of {N_THREADS} threads failed, first: {errors[0]!r}"
    for got in outcomes:
        np.testing.assert_allclose(got, module_serial, rtol=1e-10, atol=1e-12)


module = _pooling_model()


def test_row_counter_loses_no_rows_under_threads(model):
    x = _inputs(0, 2)

    def once(_: int) -> int:
        return deeplift.attribute(model, x, method="gradient", batch_size=1).shape[0]

    single_before = model.rows_forwarded
    once(0)
    per_call_rows = model.rows_forwarded - single_before
    before = model.rows_forwarded
    _run_threads(lambda k: [once(k) for _ in range(20)], N_THREADS)
    assert model.rows_forwarded - before == per_call_rows * 20 * N_THREADS
