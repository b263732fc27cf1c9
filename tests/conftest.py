"""Suite-wide test settings: the conformance data's location, and Hypothesis' profiles.

* ``@pytest.mark.conformance(*files)``: the test reads the conformance data (see
  ``conformance.py``). Missing data skips it, except under ``CI=true``, where it fails with a
  message naming the missing path.
* Property tests draw a fixed, reproducible set of examples by default (profile ``ci``). A run
  whose ``-m`` expression selects slow tests (``-m slow``) also runs every property test, on
  fresh draws from a new seed (profile ``fresh``), printed in the header and, on failure, in the
  summary; rerun with ``--hypothesis-seed=SEED`` to get the same draws again.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, settings

from conformance import missing

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fresh", derandomize=False, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _selects_slow(markexpr: str) -> bool:
    """Whether the ``-m`` expression selects a test marked only ``slow``."""
    if not markexpr.strip():
        return False
    from _pytest.mark.expression import Expression
    return bool(Expression.compile(markexpr).evaluate(lambda name, **kwargs: name == "slow"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance(*files): needs the conformance data "
                                       "(../shared/conformance or $DEEPLIFT_CONFORMANCE)")
    config._deeplift_fresh = _selects_slow(config.getoption("markexpr", "") or "")
    if config.getoption("hypothesis_profile", None):
        return  # the user chose a profile
    settings.load_profile("fresh" if config._deeplift_fresh else "ci")
    if config._deeplift_fresh:
        seed = config.getoption("hypothesis_seed", None)
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
            from hypothesis import core
            core.global_force_seed = seed  # what --hypothesis-seed sets (the plugin has run)
        config._deeplift_seed = seed


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``-m slow`` the property tests run too (before ``-m`` deselects), on fresh draws."""
    if getattr(config, "_deeplift_fresh", False):
        for item in items:
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = getattr(config, "_deeplift_seed", None)
    if seed is not None:
        return f"property tests: fresh examples, --hypothesis-seed={seed}"
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    seed = getattr(config, "_deeplift_seed", None)
    if seed is not None and exitstatus != 0:
        terminalreporter.write_line(f"property tests drew from seed {seed}: rerun with "
                                    f"--hypothesis-seed={seed} to reproduce", red=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marks = list(item.iter_markers("conformance"))
    if not marks:
        return
    reason = missing(tuple(n for m in marks for n in m.args))
    if reason is None:
        return
    if _IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
