"""TF-MoDISco-lite inputs from a scores file: ``ohe.npz`` and ``shap.npz``, each ``arr_0`` (N, 4, W).

``modisco motifs -s DIR/ohe.npz -a DIR/shap.npz -n 2000 -o modisco.h5`` reads them unchanged.
With several targets there is one ``shap.<task>.npz`` per task. The arrays are streamed into the
zip member block by block, so memory does not grow with the number of regions.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..io import replacing
from .store import iter_rows, task_groups


def write_npz_from_h5(h5_path: str | os.PathLike, dataset: str, npz_path: Path, dtype=None) -> Path:
    """``npz_path`` holding ``arr_0`` = the whole dataset, written without loading it at once."""
    import h5py
    with h5py.File(h5_path, "r") as f:
        shape, src_dtype = f[dataset].shape, f[dataset].dtype
    dtype = np.dtype(dtype or src_dtype)
    with replacing(npz_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": tuple(shape)}
                np.lib.format.write_array_header_1_0(member, header)
                for block in iter_rows(h5_path, dataset):
                    member.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
    return npz_path


def write_modisco_inputs(h5_path: str | os.PathLike, out_dir: str | os.PathLike,
                         task_names: list[str]) -> list[Path]:
    """``ohe.npz`` (float32 one-hot) and ``shap.npz`` (hypothetical contributions) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_npz_from_h5(h5_path, "raw/seq", out_dir / "ohe.npz", np.float32)]
    groups = task_groups(task_names)
    for task, group in zip(task_names, groups):
        name = "shap.npz" if len(groups) == 1 else f"shap.{task}.npz"
        written.append(write_npz_from_h5(h5_path, group + "shap/seq", out_dir / name, np.float32))
    return written
