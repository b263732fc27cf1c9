"""Where the commands write: checked before any work, written atomically, never onto an input.

A run must not lose data: ``--out`` may not be a file the run reads (model, inputs, references,
weights; symlinks and hard links included), its folder must be writable on a real file system
with room for the result *before* scoring starts, and the file appears only once complete (a
hidden temporary file next to it is removed on error, SIGINT or SIGTERM). Signals become
exceptions for the length of a command so that every ``finally`` runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .common import CliError

#: file systems that hold no user files (writing there fails or does something else)
SPECIAL_FILE_SYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs",
                        "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue",
                        "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs"}
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENOENT: "its folder does not exist",
    errno.EFBIG: "the file would be too large for the file system",
}


class Terminated(BaseException):
    """A termination signal (SIGTERM, SIGHUP) arrived; raised so that cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Terminated`, SIGINT KeyboardInterrupt (Python's own handler,
    put back for the run in case the hosting process replaced it: Ray, a notebook, a test)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s]
    old = {s: signal.signal(s, _raise) for s in wanted}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def os_error_reason(exc: OSError) -> str:
    """An OSError as a short phrase (no errno numbers, no tracebacks)."""
    return _REASONS.get(exc.errno or -1) or " ".join((exc.strerror or str(exc)).split()) or type(exc).__name__


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _file_system_type(path: Path) -> str | None:
    """The type of the file system holding ``path`` (Linux /proc/self/mountinfo; else None)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        mount = fields[4].replace("\\040", " ")
        fs = fields[fields.index("-") + 1]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fs
    return kind


def check_output_path(out: Path, option: str, reads: Iterable[tuple[str, Any]]) -> bool:
    """Refuse ``out`` when it is (a link to) a file the run reads or cannot be written; True
    when it exists already (it will be replaced). ``reads`` pairs a description with a path."""
    out = Path(out)
    if out.exists():
        if out.is_dir():
            raise CliError(f"{option} {out} is a directory", "give a file name")
        for what, path in reads:
            if path is None or not os.path.exists(str(path)):
                continue
            with contextlib.suppress(OSError):
                if os.path.samefile(out, str(path)):
                    raise CliError(f"{option} {out} is the {what} {path} of this run; writing there "
                                   "would destroy it", f"choose another {option} file name")
    parent = out.parent
    ancestor = _existing_ancestor(parent)
    if not ancestor.is_dir():
        raise CliError(f"{option} {out}: {ancestor} is a file, not a directory",
                       "choose a path inside a directory")
    kind = _file_system_type(ancestor)
    if kind in SPECIAL_FILE_SYSTEMS:
        raise CliError(f"{option} {out} is on the special file system {kind} ({ancestor}), which "
                       "holds no user files", "write to a normal directory")
    _check_writable(out, option, ancestor, parent)
    return out.exists()


def _check_writable(out: Path, option: str, ancestor: Path, parent: Path) -> None:
    fix = "choose a location you can write to"
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
            raise CliError(f"cannot write {option} {out}: the file system is read-only", fix)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {option} {out}: permission denied in {ancestor}", fix)
    if ancestor != parent:
        return  # the missing folders are created only when the output is written
    try:  # the only reliable test: create (and remove) a file where the output will go
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CliError(f"cannot write {option} {out}: {os_error_reason(exc)}", fix) from exc


def expected_size(arrays: Iterable[np.ndarray], n_targets: int, itemsize: int) -> int:
    """Uncompressed bytes of a scores file: per input, the scores (one per target) and the inputs."""
    total = 0
    for a in arrays:
        total += int(a.size) * max(1, n_targets) * itemsize + int(a.nbytes)
    return total


def check_free_space(out: Path, option: str, needed: int) -> None:
    """Refuse before scoring when the output's file system has less room than ``needed`` bytes."""
    ancestor = _existing_ancestor(Path(out).parent)
    try:
        stat = os.statvfs(ancestor)
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if needed > free:
        raise CliError(f"{option} {out}: its file system has {_size(free)} free but the scores need "
                       f"up to {_size(needed)}", "free some space or write to another disk")


def _size(n: int) -> str:
    for unit, shift in (("GB", 30), ("MB", 20), ("kB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def write_output(out: Path, option: str, data: bytes) -> Path:
    """Write ``data`` to ``out`` atomically; a failure is one clear line and leaves no file."""
    from ..io import write_atomic
    try:
        return write_atomic(out, data)
    except OSError as exc:
        raise CliError(f"cannot write {option} {out}: {os_error_reason(exc)}; nothing was written",
                       "free some space or choose another location") from exc
