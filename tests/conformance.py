"""Where the conformance data (the original library's own numbers) is found.

It lives next to the repository, in ``../shared/conformance`` (the repository's parent directory
plus ``shared/conformance``), or wherever the ``DEEPLIFT_CONFORMANCE`` environment variable
points. Tests that need it carry ``@pytest.mark.conformance`` (optionally naming the files they
read); ``conftest.py`` skips them when the data is missing, and fails them under ``CI=true`` so
that a CI run without the data can never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DEEPLIFT_CONFORMANCE"
REPOSITORY = Path(__file__).resolve().parents[1]


def conformance_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else REPOSITORY.parent / "shared" / "conformance"


CONFORMANCE = conformance_dir()


def files(pattern: str) -> list[Path]:
    """The conformance files matching ``pattern`` (empty when the directory is missing)."""
    return sorted(CONFORMANCE.glob(pattern)) if CONFORMANCE.is_dir() else []


def missing(names: tuple[str, ...] = ()) -> str | None:
    """Why the conformance data a test needs is unavailable, or None."""
    if not CONFORMANCE.is_dir():
        return (f"conformance data not found: {CONFORMANCE} does not exist (put the shared data "
                f"next to the repository or set {ENV_VAR})")
    absent = [n for n in names if not (CONFORMANCE / n).exists()]
    if absent:
        return f"conformance files missing from {CONFORMANCE}: {', '.join(absent)}"
    return None
