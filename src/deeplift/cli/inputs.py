"""INPUTS: .npy/.npz/.h5 arrays and FASTA files, read in the layout the model wants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .common import CliError, _shape, _text
from .sources import Source, _as_tensors, _probe_forward, module_accepts

ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna")


@dataclass
class Inputs:
    """What INPUTS held: one array, or a dict of arrays by input name; FASTA details."""

    data: Any
    path: str
    n: int
    layout: str | None = None
    record_names: list[str] | None = None
    unknown_letters: int | None = None


def read_array_file(path: Path, what: str, names: Sequence[str] | None = None) -> Any:
    """``.npy``, ``.npz`` (``inputs``, ``arr_0``, the only array, or one per input name) or
    ``.h5`` (``inputs``, the only dataset, or one per input name): an array or a dict."""
    if not path.exists():
        raise CliError(f"{what} file {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _pick_array({k: z[k] for k in z.files}, path, what, names)
        if suffix in (".h5", ".hdf5"):
            import h5py

            from .hdf5_probe import probe_hdf5
            probe_hdf5(path, f"{what} {path}")
            with h5py.File(path, "r") as f:
                arrays = {k: _h5_array(f[k], path, what) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            return _pick_array(arrays, path, what, names)
    except CliError:
        raise
    except MemoryError as exc:
        raise CliError(f"{what} {path} is too large to load into memory",
                       "split it into several files of fewer examples") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt files, pickled arrays, not HDF5, ...
        raise CliError(f"cannot read {what} {path}: {_text(exc)}",
                       "write it with numpy.save / numpy.savez or h5py (numeric arrays, no pickles)") from exc
    raise CliError(f"cannot tell the format of {what} {path} from its suffix {path.suffix!r}",
                   "use .npy, .npz, .h5 or FASTA (.fa/.fasta/.fna, optionally .gz)")


def _h5_array(dataset: Any, path: Path, what: str) -> np.ndarray:
    """A dataset's values, once its declared size is known to be backed by the file's bytes."""
    from .. import file_limits
    from ..errors import ModelFormatError
    try:
        file_limits.check_array_size(dataset.shape, dataset.dtype.itemsize, dataset.id.get_storage_size(),
                                     str(path), f"dataset {dataset.name!r}")
    except ModelFormatError as exc:
        raise CliError(f"{what} {_text(exc)}", "give a complete file of the size it declares") from exc
    return dataset[()]


def _pick_array(arrays: dict, path: Path, what: str, names: Sequence[str] | None) -> Any:
    for key in ("inputs", "arr_0"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if names and len(names) > 1 and all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    want = f"or one per model input {list(names)}" if names and len(names) > 1 else ""
    raise CliError(f"{what} {path} holds {sorted(arrays) or 'no arrays'}; which one to use is unclear",
                   f"store the array under the name 'inputs' {want}".strip())


def is_fasta(path: str) -> bool:
    name = path.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(FASTA_SUFFIXES)


def read_fasta_inputs(path: Path, layout: str) -> Inputs:
    """FASTA -> one-hot (N, 4, L) or (N, L, 4); letters other than ACGT become all-zero rows."""
    from ..errors import InputError
    from ..genomics import one_hot_encode, read_fasta
    if not path.exists():
        raise CliError(f"inputs file {path} does not exist", "check the path")
    try:
        names, seqs = read_fasta(path)
    except InputError as exc:
        raise CliError(f"bad FASTA: {_text(exc)}", "give a FASTA file of '>name' lines, each followed "
                       "by its sequence") from exc
    length = len(seqs[0])
    for name, seq in zip(names, seqs):
        if len(seq) != length:
            raise CliError(f"{path}: record {name!r} has {len(seq)} bases but the first record "
                           f"{names[0]!r} has {length}",
                           "all sequences must have one length; trim or pad them")
    unknown = sum(len(s) - sum(s.upper().count(b) for b in "ACGT") for s in seqs)
    onehot = one_hot_encode(seqs, layout=layout, allow_unknown=True)
    return Inputs(onehot, str(path), len(seqs), layout, names, unknown)


def onehot_layout(model: Any) -> str | None:
    """"channels_first"/"channels_last" when the model's single input is one-hot DNA-shaped."""
    if len(model.input_names) != 1:
        return None
    shape = model.layers[model.input_names[0]].shape
    if shape is None or len(shape) != 2:
        return None
    if shape[0] == 4 and shape[1] != 4:
        return "channels_first"
    if shape[1] == 4:
        return "channels_last"
    return None


def read_inputs(spec: str, source: Source) -> Inputs:
    """Read INPUTS in the form the model wants (FASTA in the model's one-hot layout)."""
    path = Path(spec)
    if is_fasta(spec):
        return _read_fasta_for(path, source)
    names = source.model.input_names if source.model is not None else _forward_arg_names(source.module)
    data = read_array_file(path, "inputs", names)
    n = _check_batch(data, path)
    return Inputs(_as_float(data), spec, n)


def _as_float(data: Any) -> Any:
    """Integer and boolean arrays (e.g. uint8 one-hot) as float32: models compute in floats."""
    if isinstance(data, dict):
        return {k: _as_float(v) for k, v in data.items()}
    return data.astype(np.float32) if data.dtype.kind in "biu" else data


def _read_fasta_for(path: Path, source: Source) -> Inputs:
    if source.model is not None:
        layout = onehot_layout(source.model)
        if layout is None:
            shape = source.model.layers[source.model.input_names[0]].shape
            raise CliError(f"FASTA inputs need a model with one one-hot DNA input (4, L) or (L, 4); "
                           f"{source.spec} takes {_shape(shape)}",
                           "give the inputs as .npy/.npz/.h5 arrays instead")
        return read_fasta_inputs(path, layout)
    inputs = read_fasta_inputs(path, "channels_first")  # PyTorch's layout first
    if module_accepts(source, inputs.data):
        return inputs
    swapped = np.ascontiguousarray(inputs.data.transpose(0, 2, 1))
    if module_accepts(source, swapped):
        inputs.data, inputs.layout = swapped, "channels_last"
        return inputs
    _probe_forward(source, _as_tensors(inputs.data))  # raises, naming the shape
    return inputs


def _forward_arg_names(module: Any) -> list[str]:
    import inspect
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_batch(data: Any, path: Path) -> int:
    arrays = data.values() if isinstance(data, dict) else [data]
    ns = set()
    for a in arrays:
        if a.ndim == 0:
            raise CliError(f"inputs {path} hold a scalar", "store a batch of examples (N, ...)")
        if a.dtype.kind == "c":
            raise CliError(f"inputs {path} have the complex dtype {a.dtype}, which no attribution "
                           "method here supports", "store real numbers (e.g. the real part, or real "
                           "and imaginary parts as two channels)")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise CliError(f"inputs {path} have dtype {a.dtype}", "store numbers (one-hot DNA, pixels, ...)")
        ns.add(a.shape[0])
    if len(ns) != 1:
        raise CliError(f"the arrays in {path} have different numbers of examples {sorted(ns)}",
                       "give every input layer the same number of examples")
    n = ns.pop()
    if n == 0:
        raise CliError(f"inputs {path} hold no examples", "store at least one example")
    return n


def check_input_shapes(model: Any, inputs: Inputs) -> None:
    """A wrong shape named with the model's expectation, before any work is done."""
    data = inputs.data if isinstance(inputs.data, dict) else {model.input_names[0]: inputs.data}
    if not isinstance(inputs.data, dict) and len(model.input_names) > 1:
        raise CliError(f"the model has {len(model.input_names)} inputs {model.input_names} but "
                       f"{inputs.path} holds one array",
                       "store one array per input, named after the inputs, in an .npz or .h5 file")
    for name, arr in data.items():
        expected = model.layers[name].shape
        got = tuple(arr.shape[1:])
        if expected is None or _shape_fits(got, expected):
            continue
        hint = "give inputs of that shape (batch axis first)"
        if len(got) == 2 and _shape_fits(got[::-1], expected):
            hint = "the two axes after the batch axis are swapped: transpose them (np.swapaxes(x, 1, 2))"
        elif inputs.record_names is not None and len(got) == len(expected):
            hint = "trim or pad the sequences to the model's length"
        raise CliError(f"inputs {inputs.path} have shape {tuple(arr.shape)} but the model's input "
                       f"{name!r} expects {_shape(expected)}", hint)


def _shape_fits(got: tuple, expected: tuple) -> bool:
    return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
