"""The model zoo (issue 9): every architecture converts unmodified, runs forward like its source,
sums to delta in float64 for rescale, reveal_cancel and genomics_default, and gives autograd's
gradient. The hand-written models run in the default suite; the rest (``-m slow``) need the
``zoo`` extra and are skipped, naming the package, without it. ``benchmarks/zoo_table.py``
writes the same results to docs/zoo.md."""

from __future__ import annotations

import pytest

from random_models import single_thread
from zoo_models import CASES, TOLERANCE, ZooCase, run_case

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _param(case: ZooCase):
    marks = [] if case.fast else [pytest.mark.slow]
    if case.known_failure:
        marks.append(pytest.mark.xfail(reason=case.known_failure, strict=True))
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_zoo_model_converts_matches_its_source_and_sums_to_delta(case: ZooCase):
    if not case.available():
        pytest.skip(f"needs the package {case.package!r} (pip install deeplift[zoo])")
    result = run_case(case)
    assert result.converts, result.error
    assert not result.error, result.error
    assert result.forward_error <= 1e-8, result.forward_error
    for method, err in result.delta_error.items():
        assert err <= TOLERANCE, (method, err)
    assert len(result.delta_error) == 3
    assert result.gradient_error <= result.gradient_tolerance, result.gradient_error
    assert result.passes
