"""The output file: finished chunks kept safe while a run goes on, then one ChromBPNet-style HDF5.

Why HDF5 (h5py, already a dependency): ChromBPNet's and TF-MoDISco-lite's downstream scripts read
``raw/seq``, ``shap/seq`` and ``projected_shap/seq`` from an ``.h5`` file, and it is chunked,
compressed and readable a slice at a time from every language. Why not write it in place while
scoring: HDF5 has no journal, so a process killed while the library updates the file's own
bookkeeping can leave the whole file unreadable. Progress is therefore recorded as one small
file per finished chunk in ``OUT.h5.parts/`` (written under a temporary name and renamed, which
is atomic: a chunk is either fully recorded or redone), next to ``run.json``, the fingerprint of
the options the run was started with. Once every chunk is there, ``OUT.h5`` is assembled chunk
by chunk (memory stays flat), appears complete or not at all, records the same fingerprint and
``complete = True``, and the parts are removed.

Layout of ``OUT.h5`` (N regions in BED order, W = --width, channels A, C, G, T):
    raw/seq                 (N, 4, W) int8      one-hot window (N and off-chromosome: all zero)
    shap/seq                (N, 4, W) float     hypothetical contributions (TF-MoDISco's input)
    projected_shap/seq      (N, 4, W) float     shap/seq * raw/seq: the contribution of each base
    regions/chrom, name     (N,) bytes
    regions/start, end      (N,) int64          the window scored (may pass a chromosome end)
    regions/bed_start, bed_end  (N,) int64      the BED interval
    regions/index           (N,) int64          line order in the BED file (0-based)
    max_abs_delta           (N,) float64        largest |summation-to-delta error| per region
With several targets, ``shap``/``projected_shap`` are per task under ``tasks/<task>/`` (each
such group also links ``raw`` to ``/raw``, so ``f["tasks/<task>"]`` reads like a ChromBPNet
file). Attributes: ``fingerprint_json``, ``metadata_json``, ``task_names``, ``complete``, and for
a shard ``shard_index``, ``shard_count``, ``region_offset``, ``n_regions_total``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..io import replacing
from .regions import Region

FORMAT = "deeplift-genome-scores/1"
CHUNK_ROWS = 64                      # HDF5 chunk rows: a region reads without decompressing much
REGION_FIELDS = ("chrom", "name", "start", "end", "bed_start", "bed_end", "index")
SHARD_ATTRS = ("shard_index", "shard_count", "region_offset", "n_regions_total")


class OutputExistsError(InputError):
    """OUT.h5 or its parts belong to a run with other options."""


# -- progress record -----------------------------------------------------------------------------


def parts_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def differences(old: dict, new: dict) -> list[str]:
    """The option names whose values differ between two fingerprints, for the error message."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


class PartsRecord:
    """``OUT.h5.parts/``: ``run.json`` (the fingerprint) and one ``chunk_<start>.npz`` per chunk."""

    def __init__(self, out: str | os.PathLike, fingerprint: dict) -> None:
        self.dir = parts_dir(out)
        self.fingerprint = fingerprint
        run_json = self.dir / "run.json"
        if run_json.exists():
            old = json.loads(run_json.read_text())
            if old != fingerprint:
                raise OutputExistsError(
                    f"{self.dir} holds the progress of a run with other options "
                    f"({'; '.join(differences(old, fingerprint))}); rerun with the same options to "
                    f"resume it, or delete {self.dir} (or choose another --out) to start afresh")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_bytes(run_json, json.dumps(fingerprint, sort_keys=True).encode())
        for stale in self.dir.glob(".tmp-*"):  # a write killed half-way: redone
            stale.unlink(missing_ok=True)

    def chunk_path(self, start: int) -> Path:
        return self.dir / f"chunk_{start:012d}.npz"

    def done(self) -> set[int]:
        """Starts of the chunks already recorded."""
        return {int(p.stem.split("_")[1]) for p in self.dir.glob("chunk_*.npz")}

    def write(self, start: int, onehot: np.ndarray, hypothetical: np.ndarray,
              max_abs_delta: np.ndarray) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.dir)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, onehot=onehot, hypothetical=hypothetical, max_abs_delta=max_abs_delta)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.chunk_path(start))

    def read(self, start: int) -> dict[str, np.ndarray]:
        with np.load(self.chunk_path(start), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- the HDF5 file -------------------------------------------------------------------------------


def _h5py():
    import h5py
    return h5py


def read_state(out: str | os.PathLike) -> dict | None:
    """Fingerprint and completeness of an existing OUT.h5 (None when it does not exist)."""
    out = Path(out)
    if not out.exists():
        return None
    h5py = _h5py()
    try:
        with h5py.File(out, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise OutputExistsError(f"{out} exists and is not a deeplift genome scores file; "
                                        "choose another --out (nothing was overwritten)")
            shard = ((int(f.attrs["shard_index"]), int(f.attrs["shard_count"]))
                     if "shard_index" in f.attrs else None)
            return {"fingerprint": json.loads(f.attrs["fingerprint_json"]), "shard": shard,
                    "complete": bool(f.attrs.get("complete", False))}
    except OSError as exc:
        raise OutputExistsError(f"{out} exists and is not a readable HDF5 file ({exc}); choose another "
                                "--out (nothing was overwritten)") from exc


def task_groups(task_names: list[str]) -> list[str]:
    """HDF5 group holding each task's ``shap``/``projected_shap``: the root for one task."""
    if len(task_names) == 1:
        return [""]
    return [f"tasks/{name}/" for name in task_names]


def create_layout(f: Any, n: int, width: int, task_names: list[str], dtype: Any) -> None:
    """All datasets of a file of ``n`` regions, empty (filled row block by row block)."""
    h5py = _h5py()
    rows = max(1, min(CHUNK_ROWS, n))
    opts = dict(compression="gzip", compression_opts=1, shuffle=True)
    f.create_dataset("raw/seq", (n, 4, width), dtype=np.int8, chunks=(rows, 4, width), **opts)
    for group in task_groups(task_names):
        for name in ("shap/seq", "projected_shap/seq"):
            f.create_dataset(group + name, (n, 4, width), dtype=dtype, chunks=(rows, 4, width), **opts)
        if group:
            f[group + "raw"] = h5py.SoftLink("/raw")
    for name in ("chrom", "name"):
        f.create_dataset(f"regions/{name}", (n,), dtype=h5py.string_dtype("utf-8"))
    for name in ("start", "end", "bed_start", "bed_end", "index"):
        f.create_dataset(f"regions/{name}", (n,), dtype=np.int64)
    f.create_dataset("max_abs_delta", (n,), dtype=np.float64)


def row_datasets(f: Any) -> list[str]:
    """Names of the datasets with one row per region (what merge copies)."""
    h5py = _h5py()
    names: list[str] = []
    f.visit(lambda name: names.append(name) if isinstance(f.get(name, getlink=True), h5py.HardLink)
            and isinstance(f[name], h5py.Dataset) else None)
    return names


def write_rows(f: Any, offset: int, task_names: list[str], regions: list[Region],
               onehot: np.ndarray, hypothetical: np.ndarray, max_abs_delta: np.ndarray) -> None:
    """One chunk's rows, ``hypothetical`` (C, T, 4, W), at row ``offset``."""
    sl = slice(offset, offset + len(regions))
    f["raw/seq"][sl] = onehot.astype(np.int8)
    for t, group in enumerate(task_groups(task_names)):
        hyp = hypothetical[:, t]
        f[group + "shap/seq"][sl] = hyp
        f[group + "projected_shap/seq"][sl] = hyp * onehot.astype(hyp.dtype)
    for name in REGION_FIELDS:
        f[f"regions/{name}"][sl] = [getattr(r, name) for r in regions]
    f["max_abs_delta"][sl] = max_abs_delta


def write_file(out: str | os.PathLike, n: int, width: int, task_names: list[str], dtype: Any,
               attrs: dict, chunks: Iterable[tuple[list[Region], dict[str, np.ndarray]]]
               ) -> tuple[float, int]:
    """Assemble OUT.h5 from the chunks in order (temporary file + rename); returns the largest
    |delta| and the number of all-zero (N or off-chromosome) window positions."""
    h5py = _h5py()
    out = Path(out)
    worst, unknown = 0.0, 0
    with replacing(out) as tmp:
        with h5py.File(tmp, "w") as f:
            create_layout(f, n, width, task_names, dtype)
            offset = 0
            for regions, part in chunks:
                write_rows(f, offset, task_names, regions, part["onehot"], part["hypothetical"],
                           part["max_abs_delta"])
                worst = max(worst, float(np.max(part["max_abs_delta"], initial=0.0)))
                unknown += int((part["onehot"].sum(axis=1) == 0).sum())
                offset += len(regions)
            if offset != n:
                raise InputError(f"internal: assembled {offset} of {n} regions")
            _set_attrs(f, attrs, task_names, worst, unknown)
    return worst, unknown


def _set_attrs(f: Any, attrs: dict, task_names: list[str], worst: float, unknown: int) -> None:
    meta = dict(attrs.get("metadata", {}), max_abs_delta=worst, unknown_positions=unknown)
    f.attrs["format"] = FORMAT
    f.attrs["fingerprint_json"] = json.dumps(attrs["fingerprint"], sort_keys=True)
    f.attrs["metadata_json"] = json.dumps(meta, sort_keys=True, default=str)
    f.attrs["task_names"] = json.dumps(task_names)
    for key in SHARD_ATTRS:
        if key in attrs:
            f.attrs[key] = attrs[key]
    f.attrs["complete"] = True


def merge_shards(out: str | os.PathLike, shards: list[str | os.PathLike]) -> int:
    """Join the files of ``--shard 0/n`` .. ``n-1/n`` into the file one unsharded run writes."""
    h5py = _h5py()
    out = Path(out)
    if out.exists():
        raise OutputExistsError(f"{out} already exists; give a new file name for the merged output "
                                "(nothing was overwritten)")
    files = [h5py.File(s, "r") for s in shards]
    try:
        infos = [_shard_info(f, s) for f, s in zip(files, shards)]
        count = infos[0]["shard_count"]
        order = sorted(range(len(files)), key=lambda k: infos[k]["shard_index"])
        indices = [infos[k]["shard_index"] for k in order]
        if indices != list(range(count)):
            missing = sorted(set(range(count)) - set(indices))
            raise InputError(f"merge needs each of the {count} shards exactly once; got shard(s) "
                             f"{indices}{f', missing {missing}' if missing else ''}")
        for k in order[1:]:
            if infos[k]["fingerprint"] != infos[order[0]]["fingerprint"] or infos[k]["shard_count"] != count:
                diff = "; ".join(differences(infos[order[0]]["fingerprint"], infos[k]["fingerprint"]))
                raise InputError(f"{shards[k]} was made with other options than {shards[order[0]]} "
                                 f"({diff or 'a different shard count'}); merge shards of one run only")
        first = files[order[0]]
        n = int(first.attrs["n_regions_total"])
        task_names = json.loads(first.attrs["task_names"])
        width = first["raw/seq"].shape[2]
        dtype = first["projected_shap/seq" if len(task_names) == 1 else
                      f"tasks/{task_names[0]}/projected_shap/seq"].dtype
        meta = json.loads(first.attrs["metadata_json"])
        attrs = {"fingerprint": infos[order[0]]["fingerprint"], "metadata": meta}
        worst, unknown = 0.0, 0
        with replacing(out) as tmp:
            with h5py.File(tmp, "w") as dst:
                create_layout(dst, n, width, task_names, dtype)
                names = row_datasets(dst)
                for k in order:
                    src, offset = files[k], int(files[k].attrs["region_offset"])
                    rows = src["raw/seq"].shape[0]
                    if offset + rows > n:
                        raise InputError(f"{shards[k]} has rows past the run's {n} regions")
                    for lo in range(0, rows, CHUNK_ROWS * 4):
                        hi = min(rows, lo + CHUNK_ROWS * 4)
                        for name in names:
                            dst[name][offset + lo:offset + hi] = src[name][lo:hi]
                    shard_meta = json.loads(src.attrs["metadata_json"])
                    worst = max(worst, float(shard_meta["max_abs_delta"]))
                    unknown += int(shard_meta["unknown_positions"])
                _set_attrs(dst, attrs, task_names, worst, unknown)
        return n
    finally:
        for f in files:
            f.close()


def _shard_info(f: Any, path: Any) -> dict:
    if f.attrs.get("format") != FORMAT:
        raise InputError(f"{path} is not a deeplift genome scores file")
    if not f.attrs.get("complete", False):
        raise InputError(f"{path} is not complete; rerun its 'deeplift score ... --shard' command to finish it")
    if "shard_index" not in f.attrs:
        raise InputError(f"{path} is not a shard (it was written without --shard); nothing to merge")
    return {"shard_index": int(f.attrs["shard_index"]), "shard_count": int(f.attrs["shard_count"]),
            "fingerprint": json.loads(f.attrs["fingerprint_json"])}


def iter_rows(path: str | os.PathLike, dataset: str, block: int = CHUNK_ROWS * 4) -> Iterator[np.ndarray]:
    """Blocks of rows of one dataset, in order (for exports that must not load the whole file)."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        d = f[dataset]
        for lo in range(0, d.shape[0], block):
            yield d[lo:lo + block]
