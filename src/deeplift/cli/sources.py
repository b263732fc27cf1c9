"""MODEL: Keras files, torch.export .pt2 archives, package.module:object (with --weights)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError, _problem, _shape, _text

BUNDLED = "bundled example"
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
MODEL_FORMATS = "a Keras .h5/.keras file, a torch.export .pt2 archive, or package.module:object"
_PYTHON_OBJECT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class Source:
    """A model as loaded: a deeplift Model already, or an nn.Module still to be converted."""

    spec: str                       # what the user gave (path, package.module:object, bundled)
    kind: str                       # "keras" | "torch.export" | "python" | "bundled"
    model: Any = None               # deeplift.Model (keras, torch.export)
    module: Any = None              # torch.nn.Module (python, bundled)
    program: Any = None             # torch.export.ExportedProgram
    task_names: list[str] | None = None
    note: str | None = None         # something the user should know about the model as loaded


def load_source(spec: str | None, weights: str | None) -> Source:
    """Load MODEL (None: the bundled example) without converting nn.Modules yet."""
    if spec is None:
        if weights:
            raise CliError("--weights was given without a MODEL",
                           "name the module as package.module:object, or drop --weights")
        from ..examples.motif_model import TASK_NAMES, load_example_model
        return Source(BUNDLED, "bundled", module=load_example_model(), task_names=list(TASK_NAMES))
    path = Path(spec)
    if not path.exists() and _PYTHON_OBJECT.match(spec):
        module, built = _python_module(spec, weights)
        note = (f"{spec} was built without --weights, so its scores are for the weights its "
                "constructor gave it") if built and not weights else None
        return Source(spec, "python", module=module, note=note)
    if weights:
        raise CliError(f"--weights applies to package.module:object models, not to {spec}",
                       "drop --weights (the file holds its own weights)")
    if not path.exists():
        raise CliError(f"model file {spec} does not exist", f"check the path (MODEL is {MODEL_FORMATS})")
    suffix = path.suffix.lower()
    try:
        if suffix in KERAS_SUFFIXES:
            return Source(spec, "keras", model=_load_keras(path))
        if suffix == ".pt2":
            program, model = _load_exported(path)
            return Source(spec, "torch.export", model=model, program=program)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc) and "memory" not in str(exc):
            raise
        raise CliError(f"model {spec} is too large to load: the memory ran out while reading it",
                       "check that the file is a model of a sensible size, or use a machine with "
                       "more memory") from exc
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise CliError(f"{spec} is a PyTorch state dict or pickle, which holds no architecture",
                       "pass the module as package.module:object with --weights "
                       f"{spec}, or save it with torch.export.save as a .pt2 archive")
    raise CliError(f"cannot tell the format of model {spec} from its suffix {path.suffix!r}",
                   f"MODEL must be {MODEL_FORMATS}")


def _load_keras(path: Path) -> Any:
    import deeplift
    from ..errors import ModelFormatError, UnsupportedLayerError
    _probe_keras_hdf5(path)
    try:
        return deeplift.load(str(path))
    except UnsupportedLayerError as exc:
        raise _unsupported(path, exc) from exc
    except (ModelFormatError, OSError, ValueError, KeyError) as exc:
        raise CliError(f"model {path} does not load: {_text(exc)}",
                       "check that it is a complete Keras 2 .h5 or Keras 3 .keras model file "
                       "(saved with model.save, not save_weights)") from exc


def _probe_keras_hdf5(path: Path) -> None:
    """The HDF5 part of a Keras file (the file, or a .keras archive's weights) read in a child
    process first, so a damaged one cannot hang or crash this one."""
    from .. import file_limits
    from .hdf5_probe import probe_hdf5
    if path.is_dir():
        return
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        probe_hdf5(path, f"model {path}")
    elif head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                file_limits.check_zip(zf, str(path))
                weights = file_limits.read_member(zf, "model.weights.h5", str(path))
        except Exception:  # noqa: BLE001 - the real reader reports a damaged archive in its words
            return
        probe_hdf5(weights, f"model {path}")


def _load_exported(path: Path) -> tuple[Any, Any]:
    from ..errors import ModelFormatError, UnsupportedLayerError
    from ..frontends.torch import convert_exported
    from ..frontends.torch_archive import load_exported
    fix = "save the model with torch.export.save(torch.export.export(module.eval(), (x,)), 'model.pt2')"
    try:
        is_zip = zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # e.g. a damaged end record that claims several disks
        is_zip = False
    if not is_zip:
        raise CliError(f"model {path} is not a torch.export archive (not a zip file)", fix)
    with _quiet_logger("torch.export"), _quiet_logger("torch._export"):
        try:
            program = load_exported(path)
        except ModelFormatError as exc:
            raise CliError(f"model {_text(exc)}", fix) from exc
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


def _python_module(spec: str, weights: str | None) -> tuple[Any, bool]:
    """``package.module:object`` -> (an nn.Module, whether a class/factory was called to build it)."""
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
    callable_made = False
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise CliError(f"{spec} is a {type(obj).__name__}, not an nn.Module",
                           "name an nn.Module instance, or a class or function that returns one")
        callable_made = True
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
    return obj.eval(), callable_made


def _load_weights(module: Any, path: Path) -> None:
    import torch
    if not path.exists():
        raise CliError(f"weights file {path} does not exist", "check the --weights path")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, or a pickle that is not plain tensors
        raise CliError(f"cannot read weights {path}: {_weights_problem(exc)}",
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


def _weights_problem(exc: Exception) -> str:
    """torch's long weights-only message cut to what matters (no ANSI escapes, no advice to unpickle)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", _text(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if "Weights only load failed" in text or found:
        what = f" (it refers to {found.group(1)})" if found else ""
        return ("it holds objects other than tensors, which deeplift never unpickles (--weights is "
                f"read with torch.load(weights_only=True)){what}")
    return text[:200]


def _unsupported(spec: Any, exc: Exception) -> CliError:
    rows = getattr(exc, "ops", None) or []
    if len(rows) > 1:  # every op without a rule, by name and count (check prints the whole table)
        listed = ", ".join(f"{row['op']} ({row['count']}x)" for row in rows)
        return CliError(f"model {spec} has {sum(r['count'] for r in rows)} unsupported ops: {listed}",
                        "rewrite those parts with supported ops or ask for rules "
                        "(deeplift check MODEL shows where each one is called)")
    return CliError(f"model {spec} has an unsupported op: {_problem(exc)}",
                    "rewrite that part with supported ops (convolutions, dense, pooling, common "
                    "activations, add/multiply/concatenate, reshapes) or ask for a rule")


def convert_source(source: Source, example: Any) -> Any:
    """The deeplift Model of a source; nn.Modules are converted on ``example`` (N >= 1, ...).

    Converting runs the module once on two examples (and the converted model once, to check
    it): that is the only forward pass before scoring (the plan reuses its layer shapes)."""
    if source.model is not None:
        return source.model
    from ..frontends.torch import convert_module
    from ..errors import DeepLiftError, InputError, UnsupportedLayerError
    examples = _as_tensors(example)
    try:
        source.model = convert_module(source.module, examples)
    except UnsupportedLayerError as exc:
        raise _unsupported(source.spec, exc) from exc
    except InputError as exc:  # the module itself fails on inputs of this shape
        raise CliError(f"{source.spec}: {_text(exc)}",
                       "give inputs of the shape the module's forward expects") from exc
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
