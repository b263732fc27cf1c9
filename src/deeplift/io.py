"""Score files users pass on: ``.npz`` laid out for TF-MoDISco-lite, and HDF5.

TF-MoDISco-lite's ``modisco motifs -s SEQS -a ATTRS`` reads the array ``arr_0`` of each ``.npz``,
both ``(N, 4, L)``. :func:`save_scores` therefore writes the scores as ``arr_0`` (so the scores
file can be passed as ``-a``) plus named arrays for everything else; :func:`save_modisco_inputs`
writes the two files modisco wants side by side.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from . import file_limits
from .errors import InputError, ModelFormatError


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def atomic_path(path: str | os.PathLike):
    """A temporary file next to ``path`` that replaces it on success (no half-written output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp), path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write to: when the block ends normally it
    replaces ``path``, with the permissions the umask gives a new file (not mkstemp's 0600); on
    any error or interruption it is removed and ``path`` is untouched."""
    tmp, final = atomic_path(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`replacing` (synced to disk first)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def encode_scores(suffix: str, scores: Any, inputs: Any = None, extra: Mapping[str, Any] | None = None,
                  metadata: Mapping[str, Any] | None = None) -> bytes:
    """The bytes of a scores file of format ``suffix`` (``.npz``, ``.h5`` or ``.hdf5``), built in
    memory so that a full disk shows up as an ordinary ``OSError`` when they are written."""
    import json

    arrays = {"scores": _array(scores)}
    if inputs is not None:
        arrays["inputs"] = _array(inputs)
    for k, v in (extra or {}).items():
        arrays[k] = _array(v)
    meta = json.dumps(dict(metadata or {}), default=str)
    buffer = io.BytesIO()
    suffix = suffix.lower()
    if suffix == ".npz":
        np.savez_compressed(buffer, arr_0=arrays["scores"], metadata_json=np.array(meta), **arrays)
    elif suffix in (".h5", ".hdf5"):
        import h5py
        with h5py.File(buffer, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v, compression="gzip")
            f.attrs["metadata_json"] = meta
    else:
        raise InputError(f"unknown output format {suffix!r}; use .npz or .h5")
    return buffer.getvalue()


def save_scores(path: str | os.PathLike, scores: Any, inputs: Any = None,
                extra: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write scores (and the inputs they explain) to ``.npz`` or ``.h5``/``.hdf5``.

    ``.npz``: ``arr_0`` = scores, ``scores`` = scores, ``inputs`` = inputs, plus ``extra`` arrays;
    ``metadata`` (JSON-able) goes to ``metadata_json``. ``.h5``: datasets of the same names and
    metadata as attributes. The file appears only once fully written.
    """
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".h5", ".hdf5"):
        raise InputError(f"unknown output format {path.suffix!r} for {path}; use .npz or .h5")
    return write_atomic(path, encode_scores(path.suffix, scores, inputs, extra, metadata))


def save_modisco_inputs(prefix: str | os.PathLike, onehot: Any, hypothetical_scores: Any) -> tuple[Path, Path]:
    """``<prefix>.ohe.npz`` and ``<prefix>.shap.npz`` (each ``arr_0`` of shape (N, 4, L)) for
    ``modisco motifs -s <prefix>.ohe.npz -a <prefix>.shap.npz``."""
    onehot, hyp = _array(onehot), _array(hypothetical_scores)
    for name, a in (("onehot", onehot), ("hypothetical scores", hyp)):
        if a.ndim != 3 or a.shape[1] != 4:
            raise InputError(f"{name} must be (N, 4, L) for TF-MoDISco, got {a.shape}")
    if onehot.shape != hyp.shape:
        raise InputError(f"onehot {onehot.shape} and hypothetical scores {hyp.shape} differ in shape")
    prefix = str(prefix)
    out = []
    for suffix, a in ((".ohe.npz", onehot), (".shap.npz", hyp)):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, a)
        out.append(write_atomic(prefix + suffix, buffer.getvalue()))
    return out[0], out[1]


def load_scores(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_scores` back into a dict (``metadata`` parsed)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"scores file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            out = {k: d[k] for k in d.files if k not in ("arr_0", "metadata_json")}
            meta = str(d["metadata_json"]) if "metadata_json" in d.files else "{}"
            if "scores" not in out and "arr_0" in d.files:
                out["scores"] = d["arr_0"]
    elif path.suffix in (".h5", ".hdf5"):
        import h5py
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in f.keys()}
            meta = f.attrs.get("metadata_json", "{}")
    else:
        raise InputError(f"unknown scores format {path.suffix!r} for {path}; use .npz or .h5")
    try:
        out["metadata"] = file_limits.load_json(meta, str(path), "its metadata")
    except ModelFormatError as exc:
        raise InputError(str(exc)) from exc
    return out
