"""The ``deeplift`` command: ``score``, ``plot`` and ``check`` (DESIGN.md §4).

    deeplift score                              # the bundled motif example, with motif AUROCs
    deeplift score model.h5 seqs.fa --method genomics_default --references dinuc-shuffle --target all
    deeplift plot deeplift_scores.npz --examples 0,3
    deeplift check mypkg.models:Net --input-shape 4,200

Every error a person can act on prints one line ``deeplift: error: <what is wrong>; <what to do>``
and exits with status 2 (``--debug`` shows the traceback instead). Output files appear only once
fully written (temporary file + rename).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

PROG = "deeplift"
BUNDLED = "bundled example"
METHODS = ["rescale", "reveal_cancel", "genomics_default", "gradient", "gradient_x_input",
           "guided_backprop", "integrated_gradients"]
GRADIENT_METHODS = {"gradient", "gradient_x_input", "guided_backprop"}
DEEPLIFT_METHODS = {"rescale", "reveal_cancel", "genomics_default"}
REFERENCE_KINDS = ["zeros", "background", "shuffle", "dinuc-shuffle"]
SHUFFLE_KINDS = {"shuffle", "dinuc-shuffle"}
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna")
OUT_SUFFIXES = (".npz", ".h5", ".hdf5")
MODEL_FORMATS = "a Keras .h5/.keras file, a torch.export .pt2 archive, or package.module:object"
_PYTHON_OBJECT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class CliError(Exception):
    """An error the user can act on: what is wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``deeplift: error:`` line like every other error."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(message, f"see '{self.prog} --help'")


# =============================================================================================
# models


@dataclass
class Source:
    """A model as loaded: a deeplift Model already, or an nn.Module still to be converted."""

    spec: str                       # what the user gave (path, package.module:object, bundled)
    kind: str                       # "keras" | "torch.export" | "python" | "bundled"
    model: Any = None               # deeplift.Model (keras, torch.export)
    module: Any = None              # torch.nn.Module (python, bundled)
    program: Any = None             # torch.export.ExportedProgram
    task_names: list[str] | None = None


def load_source(spec: str | None, weights: str | None) -> Source:
    """Load MODEL (None: the bundled example) without converting nn.Modules yet."""
    if spec is None:
        if weights:
            raise CliError("--weights was given without a MODEL",
                           "name the module as package.module:object, or drop --weights")
        from .examples.motif_model import TASK_NAMES, load_example_model
        return Source(BUNDLED, "bundled", module=load_example_model(), task_names=list(TASK_NAMES))
    path = Path(spec)
    if not path.exists() and _PYTHON_OBJECT.match(spec):
        return Source(spec, "python", module=_python_module(spec, weights))
    if weights:
        raise CliError(f"--weights applies to package.module:object models, not to {spec}",
                       "drop --weights (the file holds its own weights)")
    if not path.exists():
        raise CliError(f"model file {spec} does not exist", f"check the path (MODEL is {MODEL_FORMATS})")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return Source(spec, "keras", model=_load_keras(path))
    if suffix == ".pt2":
        program, model = _load_exported(path)
        return Source(spec, "torch.export", model=model, program=program)
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise CliError(f"{spec} is a PyTorch state dict or pickle, which holds no architecture",
                       "pass the module as package.module:object with --weights "
                       f"{spec}, or save it with torch.export.save as a .pt2 archive")
    raise CliError(f"cannot tell the format of model {spec} from its suffix {path.suffix!r}",
                   f"MODEL must be {MODEL_FORMATS}")


def _load_keras(path: Path) -> Any:
    import deeplift
    from .errors import ModelFormatError, UnsupportedLayerError
    try:
        return deeplift.load(str(path))
    except UnsupportedLayerError as exc:
        raise _unsupported(path, exc) from exc
    except (ModelFormatError, OSError, ValueError, KeyError) as exc:
        raise CliError(f"model {path} does not load: {_text(exc)}",
                       "check that it is a complete Keras 2 .h5 or Keras 3 .keras model file "
                       "(saved with model.save, not save_weights)") from exc


def _load_exported(path: Path) -> tuple[Any, Any]:
    import torch
    from .convert.torch import convert_exported
    from .errors import UnsupportedLayerError
    fix = "save the model with torch.export.save(torch.export.export(module.eval(), (x,)), 'model.pt2')"
    if not zipfile.is_zipfile(path):
        raise CliError(f"model {path} is not a torch.export archive (not a zip file)", fix)
    with _quiet_logger("torch.export") as logged:  # torch logs the real reason, then raises
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a loadable archive"
            cause = logged[-1] if logged else exc
            raise CliError(f"model {path} does not load as a torch.export archive: "
                           f"{type(cause).__name__}: {_text(cause)[:300]}", fix) from exc
    try:
        return program, convert_exported(program)
    except UnsupportedLayerError as exc:
        raise _unsupported(path, exc) from exc


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Keep a logger's records off the terminal; yields the exceptions they carried."""
    caught: list[BaseException] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                caught.append(record.exc_info[1])

    log = logging.getLogger(name)
    handlers, propagate = log.handlers, log.propagate
    log.handlers, log.propagate = [_Collect()], False
    try:
        yield caught
    finally:
        log.handlers, log.propagate = handlers, propagate


def _python_module(spec: str, weights: str | None) -> Any:
    """``package.module:object`` -> an nn.Module (an instance, or what a factory/class returns)."""
    import importlib

    import torch
    if os.getcwd() not in sys.path and "" not in sys.path:  # the console script: allow ./mymodels.py
        sys.path.append(os.getcwd())
    mod_name, obj_path = spec.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001 - ImportError or an error inside the user's module
        raise CliError(f"cannot import {mod_name!r} for model {spec}: {type(exc).__name__}: {_text(exc)}",
                       "check the module name and that its folder is on PYTHONPATH "
                       "(or run from that folder)") from exc
    for part in obj_path.split("."):
        if not hasattr(obj, part):
            raise CliError(f"module {mod_name!r} has no attribute {obj_path!r}",
                           "name an nn.Module instance, or a class or function that returns one")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise CliError(f"{spec} is a {type(obj).__name__}, not an nn.Module",
                           "name an nn.Module instance, or a class or function that returns one")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - the user's constructor
            raise CliError(f"calling {spec}() failed: {type(exc).__name__}: {_text(exc)}",
                           "name an nn.Module instance, or a class/function that needs no arguments") from exc
        if not isinstance(obj, torch.nn.Module):
            raise CliError(f"{spec}() returned a {type(obj).__name__}, not an nn.Module",
                           "name an nn.Module instance, or a class or function that returns one")
    if weights:
        _load_weights(obj, Path(weights))
    return obj.eval()


def _load_weights(module: Any, path: Path) -> None:
    import torch
    if not path.exists():
        raise CliError(f"weights file {path} does not exist", "check the --weights path")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, or a pickle that is not plain tensors
        raise CliError(f"cannot read weights {path}: {_text(exc)}",
                       "save them with torch.save(module.state_dict(), path)") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CliError(f"weights {path} hold a {type(state).__name__}, not a state dict",
                       "save them with torch.save(module.state_dict(), path)")
    try:
        module.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - missing/unexpected keys, shape mismatches
        raise CliError(f"weights {path} do not fit {type(module).__name__}: {_text(exc)[:300]}",
                       "check that the state dict was saved from this module class") from exc


def _unsupported(spec: Any, exc: Exception) -> CliError:
    return CliError(f"model {spec} has an unsupported op: {_problem(exc)}",
                    "rewrite that part with supported ops (convolutions, dense, pooling, common "
                    "activations, add/multiply/concatenate, reshapes) or ask for a rule")


def convert_source(source: Source, example: Any) -> Any:
    """The deeplift Model of a source; nn.Modules are converted on ``example`` (N >= 1, ...)."""
    if source.model is not None:
        return source.model
    from .convert.torch import convert_module
    from .errors import DeepLiftError, UnsupportedLayerError
    examples = _as_tensors(example)
    _probe_forward(source, examples)
    try:
        source.model = convert_module(source.module, examples)
    except UnsupportedLayerError as exc:
        raise _unsupported(source.spec, exc) from exc
    except DeepLiftError as exc:
        raise CliError(f"converting {source.spec} failed: {_text(exc)}",
                       "rerun with --debug and report it") from exc
    return source.model


def _as_tensors(example: Any) -> tuple:
    import torch
    parts = list(example.values()) if isinstance(example, dict) else [example]
    return tuple(torch.as_tensor(np.asarray(p[:2])) for p in parts)


def _probe_forward(source: Source, examples: tuple) -> None:
    """Run the module once so that a shape mismatch is reported as one, not as a capture failure."""
    import torch
    try:
        param = next(iter(source.module.parameters()))
        examples = tuple(e.to(param.dtype) if e.is_floating_point() else e for e in examples)
    except StopIteration:
        pass
    try:
        with torch.no_grad():
            source.module(*examples)
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises
        shapes = ", ".join(_shape(tuple(e.shape)) for e in examples)
        raise CliError(f"{source.spec} fails on inputs of shape {shapes}: {type(exc).__name__}: "
                       f"{_text(exc)}", "give inputs of the shape the module's forward expects") from exc


def module_accepts(source: Source, x: np.ndarray) -> bool:
    try:
        _probe_forward(source, _as_tensors(x))
        return True
    except CliError:
        return False


# =============================================================================================
# inputs


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
            with h5py.File(path, "r") as f:
                arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            return _pick_array(arrays, path, what, names)
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files, pickled arrays, not HDF5, ...
        raise CliError(f"cannot read {what} {path}: {_text(exc)}",
                       "write it with numpy.save / numpy.savez or h5py (numeric arrays, no pickles)") from exc
    raise CliError(f"cannot tell the format of {what} {path} from its suffix {path.suffix!r}",
                   "use .npy, .npz, .h5 or FASTA (.fa/.fasta/.fna, optionally .gz)")


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
    from .errors import InputError
    from .genomics import one_hot_encode, read_fasta
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
    return Inputs(data, spec, n)


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


# =============================================================================================
# score


@dataclass
class ScoreOptions:
    method: str
    target: Any
    references: str
    n_references: int | None
    out: Path
    dtype: str | None
    device: str


def parse_target(text: str | None, default: Any) -> Any:
    """``all``, an int, or a comma-separated list; names are kept for later resolution."""
    if text is None:
        return default
    text = text.strip()
    if text == "all":
        return "all"
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise CliError(f"--target {text!r} has an empty entry", "e.g. --target 0, --target 0,2 or --target all")
    values = [int(p) if re.fullmatch(r"-?\d+", p) else p for p in parts]
    return values[0] if len(values) == 1 and "," not in text else values


def resolve_target_names(target: Any, task_names: list[str] | None) -> Any:
    items = target if isinstance(target, list) else [target]
    out = []
    for t in items:
        if isinstance(t, str) and t != "all":
            if not task_names or t not in task_names:
                known = f"the tasks are {task_names}" if task_names else "the model's tasks have no names"
                raise CliError(f"--target {t!r} is not a unit index or a known task name ({known})",
                               "give an index such as --target 0, a list 0,2, or all")
            t = task_names.index(t)
        out.append(t)
    return out if isinstance(target, list) else out[0]


def score_options(args: argparse.Namespace, bundled: bool) -> ScoreOptions:
    """Check the option values before any loading, so mistakes fail fast."""
    method = args.method or ("genomics_default" if bundled else "rescale")
    refs = args.references
    if refs is None:
        refs = "dinuc-shuffle" if bundled and method not in GRADIENT_METHODS else "zeros"
    elif method in GRADIENT_METHODS:
        raise CliError(f"--references has no effect with --method {method} (it uses no reference)",
                       "drop --references, or use a reference-based method such as rescale")
    if args.n_references is not None:
        if refs not in SHUFFLE_KINDS:
            raise CliError(f"--n-references applies to --references shuffle/dinuc-shuffle, not {refs}",
                           "drop --n-references, or use --references dinuc-shuffle")
        if args.n_references < 1:
            raise CliError(f"--n-references must be at least 1, got {args.n_references}",
                           "e.g. --n-references 10")
    if refs not in REFERENCE_KINDS and not Path(refs).is_file():
        raise CliError(f"--references {refs} is neither {', '.join(REFERENCE_KINDS)} nor an existing file",
                       "choose one of those kinds or give the path of a .npy/.npz/.h5 file")
    n_refs = (args.n_references or 10) if refs in SHUFFLE_KINDS else None
    for name in ("batch_size", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {value}", "give a positive integer")
    if args.hypothetical and method not in DEEPLIFT_METHODS:
        raise CliError(f"--hypothetical needs a DeepLIFT method, not {method}",
                       "use --method rescale, reveal_cancel or genomics_default")
    out = Path(args.out or "deeplift_scores.npz")
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise CliError(f"--out {out} has an unknown suffix {out.suffix!r}", "name it something.npz or something.h5")
    if out.is_dir():
        raise CliError(f"--out {out} is a directory", "give a file name ending in .npz or .h5")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CliError("--device cuda was asked for but torch sees no CUDA device",
                           "use --device cpu (the default) or install a CUDA build of torch")
    target = parse_target(args.target, "all" if bundled else 0)
    return ScoreOptions(method, target, refs, n_refs, out, args.dtype, args.device)


def make_references(kind: str, n_refs: int | None, seed: int, inputs: Inputs, model: Any) -> Any:
    """What ``attribute(references=...)`` gets for ``--references KIND|FILE``."""
    from . import references
    if kind == "zeros":
        return None
    if kind in ("background", "shuffle", "dinuc-shuffle"):
        x = inputs.data
        if isinstance(x, dict) or x.ndim != 3 or 4 not in (x.shape[1], x.shape[2]):
            shape = "several arrays" if isinstance(x, dict) else _shape(tuple(x.shape))
            raise CliError(f"--references {kind} needs one-hot DNA inputs (N, 4, L) or (N, L, 4), "
                           f"got {shape}", "use --references zeros or a reference FILE")
        if kind == "dinuc-shuffle":
            _check_one_hot(x, inputs.path)
        if kind == "background":
            return references.background()
        maker = references.shuffle if kind == "shuffle" else references.dinuc_shuffle
        return maker(n_refs, seed)
    return read_array_file(Path(kind), "references", model.input_names)


def _check_one_hot(x: np.ndarray, path: str) -> None:
    axis = 1 if x.shape[1] == 4 else 2
    if not np.isin(x, (0, 1)).all() or (x.sum(axis) > 1).any():
        raise CliError(f"--references dinuc-shuffle needs one-hot inputs but {path} holds values "
                       "other than one 1 per position", "use --references zeros or background")


def n_reference_pairs(refs: Any, n_refs: int | None, inputs: Inputs) -> int:
    """References per example (for the progress-bar decision only)."""
    if n_refs is not None:
        return n_refs
    x = inputs.data
    if isinstance(refs, np.ndarray) and not isinstance(x, dict) and refs.ndim == x.ndim + 1:
        return int(refs.shape[1])
    return 1


def cmd_score(args: argparse.Namespace) -> int:
    if args.model is not None and args.inputs is None:
        raise CliError("MODEL was given without INPUTS",
                       "give an inputs file after the model, or neither to run the bundled example")
    bundled = args.model is None
    opts = score_options(args, bundled)
    source = load_source(args.model, args.weights)
    inputs = _bundled_inputs() if bundled else read_inputs(args.inputs, source)
    model = convert_source(source, inputs.data)
    model = _place(model, opts)
    check_input_shapes(model, inputs)
    opts.target = resolve_target_names(opts.target, source.task_names)
    target_layer = _parse_layer(args.target_layer)
    indices, layer = resolve_target_indices(model, inputs, opts.target, target_layer)
    tasks = source.task_names if layer == _default_layer(model) else None  # names of the logits
    refs = make_references(opts.references, opts.n_references, args.seed, inputs, model)
    say = (lambda *a: None) if args.quiet else print
    _describe_run(say, source, model, inputs, opts, indices, tasks, args.seed)
    scores, delta, seconds = run_attribute(model, inputs, refs, opts, args, target_layer)
    meta = _metadata(source, model, inputs, opts, args, indices, layer, tasks, delta)
    _save(opts.out, scores, inputs, model, meta)
    say(f"wrote {opts.out}: scores {_shape(_first(scores).shape)}")
    if bundled and tasks:
        for line in motif_auroc_lines(_first(scores), inputs.data, indices, tasks, args.hypothetical):
            print(line)
    print(_summary(inputs, seconds, meta["max_abs_delta"]))
    return 0


def _bundled_inputs() -> Inputs:
    from .examples.motif_model import load_example_data
    data = load_example_data()
    return Inputs(data["onehot"], "bundled example data", len(data["onehot"]), "channels_first")


def _place(model: Any, opts: ScoreOptions) -> Any:
    import torch
    if opts.dtype is not None:
        model = model.to(getattr(torch, opts.dtype))
    if opts.device != "cpu":
        model = model.to(opts.device)
    return model


def _parse_layer(text: str | None) -> Any:
    if text is None:
        return None
    return int(text) if re.fullmatch(r"-?\d+", text.strip()) else text


def resolve_target_indices(model: Any, inputs: Inputs, target: Any, target_layer: Any
                           ) -> tuple[list[int], str]:
    """The unit indices that will be scored, checked against the target layer's size."""
    import torch

    from .api import default_target_layer
    from .errors import InputError
    try:
        layer = default_target_layer(model) if target_layer is None else model.resolve(target_layer, "target layer")
    except InputError as exc:
        raise CliError(f"--target-layer: {_text(exc)}", "run 'deeplift check MODEL' to see the layer names") from exc
    data = inputs.data if isinstance(inputs.data, dict) else {model.input_names[0]: inputs.data}
    first = [torch.as_tensor(np.asarray(data[n][:1]), dtype=model.dtype, device=model.device)
             for n in model.input_names]
    with torch.no_grad():
        n_units = int(model.forward_all(first, [layer])[layer][0].numel())
    wanted = list(range(n_units)) if target == "all" else (target if isinstance(target, list) else [target])
    for t in wanted:
        if not -n_units <= t < n_units:
            raise CliError(f"--target {t} is out of range: layer {layer!r} has {n_units} output unit(s)",
                           f"use 0..{n_units - 1} or all")
    return [t % n_units for t in wanted], layer


def run_attribute(model: Any, inputs: Inputs, refs: Any, opts: ScoreOptions, args: argparse.Namespace,
                  target_layer: Any) -> tuple[Any, Any, float]:
    """``deeplift.attribute`` with the summation-to-delta check; returns scores, delta, seconds."""
    import deeplift
    from .errors import DeepLiftError
    with_delta = opts.method not in GRADIENT_METHODS
    batch_size = args.batch_size or 256
    steps = args.steps or 50
    per_batch = max(1, batch_size // steps) if opts.method == "integrated_gradients" else batch_size
    n_batches = math.ceil(inputs.n * n_reference_pairs(refs, opts.n_references, inputs) / per_batch)
    start = time.perf_counter()
    try:
        result = deeplift.attribute(
            model, inputs.data, references=refs, method=opts.method, target=opts.target,
            target_layer=target_layer, batch_size=batch_size, progress=n_batches > 1 and not args.quiet,
            steps=steps, hypothetical=args.hypothetical, return_delta=with_delta, seed=args.seed)
    except DeepLiftError as exc:
        raise CliError(f"scoring failed: {_problem(exc)}", _fix(exc, "check the inputs and options "
                       "(deeplift score --help)")) from exc
    seconds = time.perf_counter() - start
    scores, delta = result if with_delta else (result, None)
    return scores, delta, seconds


def _metadata(source: Source, model: Any, inputs: Inputs, opts: ScoreOptions, args: argparse.Namespace,
              indices: list[int], layer: str, tasks: list[str] | None, delta: Any) -> dict:
    import platform

    import torch

    import deeplift
    single = isinstance(opts.target, int)
    return {
        "model": source.spec, "model_kind": source.kind, "inputs": inputs.path,
        "input_names": list(model.input_names), "method": opts.method,
        "targets": indices, "target_axis": not single, "target_layer": layer,
        "task_names": [tasks[i] for i in indices] if tasks and max(indices) < len(tasks) else None,
        "layout": inputs.layout or onehot_layout(model), "references": opts.references,
        "n_references": opts.n_references, "seed": args.seed, "hypothetical": bool(args.hypothetical),
        "max_abs_delta": None if delta is None else float(np.abs(np.asarray(delta)).max()),
        "dtype": str(model.dtype).replace("torch.", ""), "n_examples": inputs.n,
        "unknown_letters": inputs.unknown_letters,
        "versions": {"deeplift": deeplift.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }


def _default_layer(model: Any) -> str:
    from .api import default_target_layer
    return default_target_layer(model)


def _save(out: Path, scores: Any, inputs: Inputs, model: Any, meta: dict) -> None:
    from .io import save_scores
    extra: dict[str, Any] = {}
    if isinstance(scores, tuple):  # several input layers: one scores/inputs array per input
        for name, s in zip(model.input_names, scores):
            extra[f"scores_{name}"] = s
            extra[f"inputs_{name}"] = inputs.data[name]
    if inputs.record_names is not None:
        names = np.array(inputs.record_names)
        extra["names"] = names.astype("S") if out.suffix.lower() != ".npz" else names
    first_inputs = inputs.data[model.input_names[0]] if isinstance(inputs.data, dict) else inputs.data
    save_scores(out, _first(scores), first_inputs, extra=extra, metadata=meta)


def _first(scores: Any) -> Any:
    return scores[0] if isinstance(scores, tuple) else scores


def _describe_run(say: Callable, source: Source, model: Any, inputs: Inputs, opts: ScoreOptions,
                  indices: list[int], tasks: list[str] | None, seed: int) -> None:
    shapes = ", ".join(_shape(model.layers[n].shape) for n in model.input_names)
    say(f"model: {source.spec} ({len(model.layer_names)} layers, input {shapes})")
    what = f"one-hot DNA ({inputs.layout})" if inputs.layout else "arrays"
    say(f"inputs: {inputs.n} examples from {inputs.path}, {what}")
    refs = opts.references + (f" x{opts.n_references} per example (seed {seed})" if opts.n_references else "")
    if opts.method in GRADIENT_METHODS:
        refs = "none (gradient method)"
    shown = ", ".join(tasks[i] if tasks and i < len(tasks) else str(i) for i in indices[:10])
    more = f", ... ({len(indices)} in all)" if len(indices) > 10 else ""
    say(f"method {opts.method}, references {refs}, targets {shown}{more}")


def _summary(inputs: Inputs, seconds: float, max_delta: float | None) -> str:
    rate = inputs.n / seconds if seconds > 0 else float("inf")
    err = "n/a (gradient method)" if max_delta is None else f"{max_delta:.2g}"
    line = (f"scored {inputs.n} examples in {seconds:.{1 if seconds >= 1 else 2}f} s "
            f"({rate:.0f} examples/s); "
            f"largest |summation-to-delta error| {err}")
    if inputs.unknown_letters is not None:
        line += f"; {inputs.unknown_letters} letters other than ACGT scored as all-zero positions"
    return line


# -- the bundled example's check: do the scores find the embedded motifs? ----------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank-sum statistic, ties averaged)."""
    labels = labels.astype(bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def motif_auroc_lines(scores: np.ndarray, onehot: np.ndarray, indices: list[int],
                      task_names: list[str], hypothetical: bool) -> list[str]:
    """Per task: AUROC of |score| at the observed base, inside vs outside the task's motifs."""
    from .examples.motif_model import load_example_data
    data = load_example_data()
    if scores.ndim == onehot.ndim:  # one target: no target axis
        scores = scores[:, None]
    lines = []
    for k, t in enumerate(indices):
        task = task_names[t]
        motifs = [m for m in data["motif_names"] if m in task.split("_and_")]
        mask = np.zeros((onehot.shape[0], onehot.shape[2]), dtype=bool)
        for seq, name, start, end, _ in data["motif_positions"]:
            if name in motifs and seq < len(mask):
                mask[seq, start:end] = True
        s = scores[:, k] * onehot if hypothetical else scores[:, k]
        per_position = np.abs(s.sum(axis=1))  # a position's score, shown on its observed base
        value = auroc(per_position.ravel(), mask.ravel())
        lines.append(f"AUROC {task}: {value:.3f}  (|score| inside {' or '.join(motifs)} motifs vs "
                     f"elsewhere, {int(mask.sum())} of {mask.size} positions inside)")
    return lines


# =============================================================================================
# plot


def cmd_plot(args: argparse.Namespace) -> int:
    from .io import load_scores
    from .viz import _require_matplotlib
    path = Path(args.scores)
    if not path.exists():
        raise CliError(f"scores file {path} does not exist", "run 'deeplift score' first, or check the path")
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise CliError(f"scores file {path} is not .npz or .h5", "give a file written by 'deeplift score'")
    if args.window < 1:
        raise CliError(f"--window must be at least 1, got {args.window}", "e.g. --window 100")
    _require_matplotlib()
    try:
        saved = load_scores(path)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files
        raise CliError(f"cannot read scores {path}: {_text(exc)}", "give a file written by 'deeplift score'") from exc
    if "inputs" not in saved:
        raise CliError(f"{path} holds no inputs", "plot needs the inputs saved next to the scores by 'deeplift score'")
    scores, x, meta = np.asarray(saved["scores"]), np.asarray(saved["inputs"]), saved["metadata"]
    scores, label = _pick_target(scores, x, meta, args.target)
    examples = _parse_examples(args.examples, len(x))
    kind = _plot_kind(x)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out-dir {out_dir} is a file", "give a directory name")
    for i in examples:
        out = out_dir / f"{path.stem}_example{i}_{_safe(label)}.png"
        if kind == "logo":
            _write_logo(out, scores[i], x[i], meta, i, label, args.window)
        else:
            _write_heatmap(out, scores[i], x[i], kind, i, label)
        print(f"wrote {out}")
    return 0


def _pick_target(scores: np.ndarray, x: np.ndarray, meta: dict, wanted: str | None) -> tuple[np.ndarray, str]:
    targets = list(meta.get("targets") or [])
    names = meta.get("task_names") or None
    has_axis = meta.get("target_axis", scores.ndim == x.ndim + 1)
    if not has_axis:
        only = str(names[0]) if names else (f"target {targets[0]}" if targets else "target")
        if wanted is not None and wanted not in (only, *(str(t) for t in targets)):
            raise CliError(f"--target {wanted} is not in this file, which holds scores for {only} only",
                           "drop --target, or score that target first")
        return scores, only
    if not targets:
        targets = list(range(scores.shape[1]))
    if wanted is None:
        k = 0
    elif names and wanted in names:
        k = names.index(wanted)
    elif re.fullmatch(r"-?\d+", wanted) and int(wanted) in targets:
        k = targets.index(int(wanted))
    else:
        have = names or targets
        raise CliError(f"--target {wanted} is not in this file, which holds {have}",
                       "give one of those (a unit index or task name)")
    label = str(names[k]) if names else f"target {targets[k]}"
    return scores[:, k], label


def _parse_examples(text: str | None, n: int) -> list[int]:
    if text is None:
        return list(range(min(3, n)))
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--examples {text!r} is not a comma-separated list of indices", "e.g. --examples 0,3,5") from None
    bad = [v for v in values if not 0 <= v < n]
    if not values or bad:
        raise CliError(f"--examples {text!r}: the file holds examples 0..{n - 1}",
                       "give indices in that range, e.g. --examples 0,3,5")
    return values


def _plot_kind(x: np.ndarray) -> str:
    if x.ndim == 3 and 4 in (x.shape[1], x.shape[2]) and np.isin(x, (0, 1)).all():
        return "logo"
    if x.ndim == 3:
        return "heatmap_2d"
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return "heatmap_channels_first"
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return "heatmap_channels_last"
    raise CliError(f"cannot plot scores for inputs of shape {_shape(x.shape[1:])}",
                   "plot draws one-hot DNA (4, L)/(L, 4) as logos and images (H, W), (C, H, W) or "
                   "(H, W, C) with 1 or 3 channels as heatmaps")


def _write_logo(out: Path, scores: np.ndarray, onehot: np.ndarray, meta: dict, index: int,
                label: str, window: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from .viz import plot_logo
    layout = meta.get("layout") or ("channels_first" if onehot.shape[0] == 4 else "channels_last")
    if layout == "channels_last":
        scores, onehot = scores.T, onehot.T  # (4, L) from here on
    hypothetical = bool(meta.get("hypothetical"))
    observed = (scores * onehot).sum(0) if hypothetical else scores.sum(0)
    length = scores.shape[1]
    width = min(window, length)
    start = int(np.clip(int(np.argmax(np.abs(observed))) - width // 2, 0, length - width))
    stop = start + width
    fig = Figure(figsize=(max(6.0, 0.12 * width), 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    part = scores[:, start:stop]
    kwargs = {} if hypothetical else {"onehot": onehot[:, start:stop], "sum_channels": True}
    plot_logo(part, ax=ax, layout="channels_first",
              highlight=_motif_boxes(meta, index, start, stop), **kwargs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v + start))}"))
    ax.set_ylabel("hypothetical score" if hypothetical else "score", fontsize=8)
    ax.set_title(f"example {index}, {label}, {meta.get('method', 'scores')}, positions "
                 f"{start}-{stop - 1}", fontsize=9)
    _save_figure(fig, out)


def _motif_boxes(meta: dict, index: int, start: int, stop: int) -> dict | None:
    """The bundled example's embedded motifs inside the window, as highlight boxes."""
    if meta.get("model") != BUNDLED:
        return None
    from .examples.motif_model import load_example_data
    colours = {"GATA": "purple", "TAL1": "brown"}
    boxes: dict[str, list] = {}
    for seq, name, s, e, _ in load_example_data()["motif_positions"]:
        if seq == index and s >= start and e <= stop:
            boxes.setdefault(colours.get(name, "black"), []).append((s - start, e - start))
    return boxes or None


def _write_heatmap(out: Path, scores: np.ndarray, image: np.ndarray, kind: str, index: int,
                   label: str) -> None:
    from .viz import plot_heatmap
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    layout = "channels_last" if kind == "heatmap_channels_last" else "channels_first"
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    plot_heatmap(scores, image=image, ax=ax, layout=layout, title=f"example {index}, {label}")
    _save_figure(fig, out)


def _save_figure(fig: Any, out: Path) -> None:
    from .io import atomic_path
    tmp, final = atomic_path(out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.tight_layout()
        fig.savefig(tmp, format="png")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _safe(label: str) -> str:
    return re.sub(r"[^\w.-]+", "_", label)


# =============================================================================================
# check


def cmd_check(args: argparse.Namespace) -> int:
    source = load_source(args.model, args.weights)
    shape = _parse_shape(args.input_shape)
    if source.kind == "bundled" and shape is None:
        shape = (4, 200)
    if source.model is None:
        if shape is None:
            raise CliError(f"{source.spec} is a PyTorch module, which needs an input shape to be traced",
                           "add --input-shape, e.g. --input-shape 4,200 for (N, 4, 200)")
        x = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
        _probe_forward(source, _as_tensors(x))
        source.model = _convert_unchecked(source, x)
    model = source.model
    print(f"model: {source.spec} ({source.kind}): {len(model.layer_names)} layers, inputs "
          f"{', '.join(f'{n} {_shape(model.layers[n].shape)}' for n in model.input_names)}, "
          f"outputs {', '.join(model.output_names)}")
    for line in layer_table(model):
        print(line)
    print("unsupported ops: none (every layer has a DeepLIFT rule)")
    ok, line = forward_check(source, shape)
    print(line)
    return 0 if ok else 1


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise CliError(f"--input-shape {text!r} is not a comma-separated list of sizes",
                       "give the shape of one example without the batch axis, e.g. 4,200") from None
    if not shape or min(shape) < 1:
        raise CliError(f"--input-shape {text!r} must list positive sizes", "e.g. --input-shape 4,200")
    return shape


def _convert_unchecked(source: Source, x: np.ndarray) -> Any:
    import torch

    from .convert.torch import convert_module
    from .errors import UnsupportedLayerError
    try:
        return convert_module(source.module, torch.from_numpy(x[:2]), check=False)
    except UnsupportedLayerError as exc:
        raise _unsupported(source.spec, exc) from exc


def layer_table(model: Any) -> list[str]:
    """One row per layer: name, type, inputs and, for nonlinearities, the rule of each method."""
    from .layers.activations import Activation
    from .methods import get_method, rule_resolver
    methods = ["rescale", "reveal_cancel", "genomics_default"]
    resolvers = {m: rule_resolver(model, get_method(m)) for m in methods}
    width = max([5] + [len(n) for n in model.layer_names]) + 2
    rows = [f"{'layer':{width}s}{'type':22s}{'inputs':{width}s}rule: " + " / ".join(methods)]
    for name, layer in model.layers.items():
        kind = layer.describe()
        if type(layer).__name__ == "Input":
            kind = f"Input{_shape(layer.shape)}"
        rules = ""
        if isinstance(layer, Activation):
            rules = " / ".join(resolvers[m](layer) for m in methods)
        rows.append(f"{name:{width}s}{kind:22s}{', '.join(layer.inputs) or '-':{width}s}{rules}".rstrip())
    return rows


def forward_check(source: Source, shape: tuple[int, ...] | None) -> tuple[bool, str]:
    """Compare the converted forward pass with the source model's on random inputs."""
    model = source.model
    shapes = _input_shapes(model, shape)
    if shapes is None:
        return True, "forward pass: not compared (the input shape has free sizes; give --input-shape)"
    n = _program_batch(source.program) or 8
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, *s)).astype(np.float32) for s in shapes]
    try:
        expected = _source_forward(source, xs)
    except _NoReference as exc:
        return True, f"forward pass: could not be compared ({exc})"
    got = model(*xs)
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(expected):
        return False, f"forward pass: DIFFERS: {len(got)} outputs vs the source's {len(expected)}"
    worst, scale = 0.0, 0.0
    for g, e in zip(got, expected):
        e = np.asarray(e, dtype=np.float64)
        if np.shape(g) != e.shape:
            return False, f"forward pass: DIFFERS: output shape {np.shape(g)} vs the source's {e.shape}"
        worst = max(worst, float(np.abs(np.asarray(g, dtype=np.float64) - e).max()))
        scale = max(scale, float(np.abs(e).max()))
    ok = worst <= 1e-4 * (1.0 + scale)
    verdict = "matches the source model" if ok else "DIFFERS from the source model"
    return ok, f"forward pass: {verdict} (max |difference| {worst:.2g} on {n} random inputs)"


class _NoReference(Exception):
    """The source model cannot be run here (e.g. Keras is not installed)."""


def _input_shapes(model: Any, shape: tuple[int, ...] | None) -> list[tuple[int, ...]] | None:
    shapes = [model.layers[n].shape for n in model.input_names]
    if shape is not None and len(shapes) == 1:
        return [shape]
    if any(s is None or any(d is None for d in s) for s in shapes):
        return None
    return [tuple(s) for s in shapes]


def _program_batch(program: Any) -> int | None:
    if program is None:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            size = node.meta["val"].shape[0]
            return size if isinstance(size, int) else None
    return None


def _source_forward(source: Source, xs: list[np.ndarray]) -> list[np.ndarray]:
    import torch
    if source.kind == "keras":
        return _keras_forward(Path(source.spec), xs)
    fn = source.program.module() if source.program is not None else source.module
    args = []
    for x in xs:
        t = torch.from_numpy(x)
        try:
            t = t.to(next(iter(source.module.parameters())).dtype) if source.module is not None else t
        except StopIteration:
            pass
        args.append(t)
    with torch.no_grad():
        out = fn(*args)
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o.detach().cpu().numpy() for o in out]


def _keras_forward(path: Path, xs: list[np.ndarray]) -> list[np.ndarray]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception:  # noqa: BLE001 - not installed, or a broken backend
        raise _NoReference("keras is not importable here; install keras to compare") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = keras.saving.load_model(str(path), compile=False)
            out = km.predict(xs[0] if len(xs) == 1 else xs, verbose=0)
    except Exception as exc:  # noqa: BLE001 - e.g. a Keras 2 file Keras 3 cannot read
        raise _NoReference(f"keras could not run {path.name}: {type(exc).__name__}: {_text(exc)[:200]}") from None
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


# =============================================================================================
# the command line


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="DeepLIFT importance scores from the command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{score,plot,check}", parser_class=_Parser)
    _score_parser(sub)
    _plot_parser(sub)
    _check_parser(sub)
    return parser


def _score_parser(sub: Any) -> None:
    p = sub.add_parser("score", help="score inputs (no MODEL/INPUTS: the bundled example)",
                       description="Score INPUTS with MODEL and write the scores (and inputs) to "
                       "--out. With neither, score the bundled motif example and print how well "
                       "the scores find its embedded motifs.")
    p.add_argument("model", nargs="?", metavar="MODEL", help=f"{MODEL_FORMATS}")
    p.add_argument("inputs", nargs="?", metavar="INPUTS",
                   help=".npy, .npz, .h5, or FASTA (.fa/.fasta/.fna, optionally .gz)")
    p.add_argument("--references", metavar="KIND|FILE",
                   help=f"{'|'.join(REFERENCE_KINDS)} or a .npy/.npz/.h5 file (default zeros; "
                   "the bundled example: dinuc-shuffle)")
    p.add_argument("--n-references", type=int, metavar="R",
                   help="shuffled references per example, averaged (default 10)")
    p.add_argument("--method", choices=METHODS,
                   help="default rescale (the bundled example: genomics_default)")
    p.add_argument("--target", metavar="INT|LIST|all",
                   help="output unit(s) of the target layer: 0, 0,2 or all (default 0; bundled: all)")
    p.add_argument("--target-layer", metavar="NAME", help="default: the logits")
    p.add_argument("--batch-size", type=int, metavar="B", help="(example, reference) pairs per batch (256)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], help="default: the model's")
    p.add_argument("--hypothetical", action="store_true",
                   help="hypothetical scores of every base (one-hot inputs; for TF-MoDISco)")
    p.add_argument("--out", metavar="FILE", help="scores.npz or scores.h5 (default deeplift_scores.npz)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled references (0)")
    p.add_argument("--weights", metavar="STATE_DICT", help="state dict for a package.module:object model")
    p.add_argument("--steps", type=int, metavar="N", help="integrated gradients steps (50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or run description")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_score)


def _plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="sequence logos / heatmaps of a scores file",
                       description="Draw one PNG per chosen example: a sequence logo of a window "
                       "around the top-scoring position for one-hot DNA, a heatmap for images.")
    p.add_argument("scores", nargs="?", default="deeplift_scores.npz", metavar="SCORES",
                   help="a file written by 'deeplift score' (default deeplift_scores.npz)")
    p.add_argument("--examples", metavar="LIST", help="e.g. 0,3,5 (default 0,1,2)")
    p.add_argument("--target", metavar="T", help="unit index or task name (default: the first in the file)")
    p.add_argument("--window", type=int, default=100, metavar="W", help="positions per logo (100)")
    p.add_argument("--out-dir", default="deeplift_plots", metavar="DIR", help="(deeplift_plots)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_plot)


def _check_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="layers, rules, unsupported ops and forward equivalence",
                       description="List the layers deeplift finds in MODEL, the rule each "
                       "nonlinearity gets, and whether the converted forward pass matches.")
    p.add_argument("model", nargs="?", metavar="MODEL", help=f"{MODEL_FORMATS} (default: the bundled example)")
    p.add_argument("--input-shape", metavar="SHAPE", help="one example's shape, e.g. 4,200 (PyTorch modules)")
    p.add_argument("--weights", metavar="STATE_DICT", help="state dict for a package.module:object model")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_check)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deeplift`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise CliError("no command given", "run 'deeplift score' (the bundled example), or see 'deeplift --help'")
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        status, message = _error_line(exc)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status


def _error_line(exc: Exception) -> tuple[int, str]:
    from .errors import DeepLiftError
    if isinstance(exc, CliError):
        return 2, _text(exc)
    if isinstance(exc, DeepLiftError):
        return 2, f"{_problem(exc)}; {_fix(exc, 'check the inputs and options (see --help)')}"
    if isinstance(exc, FileNotFoundError):
        return 2, f"{exc.filename or _text(exc)} does not exist; check the path"
    if isinstance(exc, PermissionError):
        return 2, f"permission denied: {exc.filename or _text(exc)}; choose a path you can write to"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return 2, "out of memory; lower --batch-size or --n-references"
    return 1, (f"unexpected {type(exc).__name__}: {_text(exc)[:300]}; rerun with --debug to see the "
               "traceback, and please report it")


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


def _version() -> str:
    from . import __version__
    return __version__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
