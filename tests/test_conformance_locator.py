"""Under CI=true, missing conformance data fails the tests that need it (naming the path) instead
of skipping them, so a CI run without ../shared/conformance can not pass green."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_missing_conformance_data_fails_under_ci_and_names_the_path(tmp_path):
    missing = tmp_path / "no_such_conformance"
    env = {**os.environ, "CI": "true", "DEEPLIFT_CONFORMANCE": str(missing)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(TESTS / "test_genomics.py"), "-q", "-p", "no:cacheprovider",
         "-k", "fixture_onehot_shuffles_reproduce_original_bit_exact"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"CI=true: conformance data not found: {missing} does not exist" in proc.stdout
    assert "1 error" in proc.stdout.splitlines()[-1]
