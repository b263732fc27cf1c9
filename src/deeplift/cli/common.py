"""What every part of the command line shares: the user-facing error and its message helpers."""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """An error the user can act on: what is wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")


def _problem(exc: Exception) -> str:
    return _text(exc).split("; ", 1)[0]


def _fix(exc: Exception, default: str) -> str:
    parts = _text(exc).split("; ", 1)
    return parts[1] if len(parts) == 2 else default


def _text(exc: Any) -> str:
    """An exception's message on one line."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _shape(shape: Any) -> str:
    if shape is None:
        return "(unknown)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
