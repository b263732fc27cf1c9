"""``deeplift check``: layers, rules, unsupported ops and forward equivalence."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError, _shape, _text
from .sources import Source, _unsupported, load_source


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
    if args.trace:
        for row in trace_table(source, args.trace):
            print(row)
    return 0 if ok else 1


TRACE_METHODS = ("rescale", "reveal_cancel", "genomics_default")
TRACE_EXAMPLES = 16


def trace_table(source: Source, spec: str) -> list[str]:
    """Per layer, the largest error of its own conservation under each DeepLIFT method, on the
    first examples of INPUTS against zero references: float rounding unless a rule leaks."""
    import warnings as _warnings

    import deeplift
    from ..errors import DeepLiftError, SummationToDeltaWarning
    from .inputs import read_inputs
    inputs = read_inputs(spec, source)
    data = inputs.data
    data = {k: v[:TRACE_EXAMPLES] for k, v in data.items()} if isinstance(data, dict) else data[:TRACE_EXAMPLES]
    tables = {}
    for method in TRACE_METHODS:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", SummationToDeltaWarning)  # the table says it
                _, tables[method] = deeplift.attribute(source.model, data, method=method,
                                                       return_node_deltas=True)
        except DeepLiftError as exc:
            raise CliError(f"--trace {spec}: {_text(exc)}", "check the inputs' shape") from exc
    n = min(inputs.n, TRACE_EXAMPLES)
    width = max([5] + [len(name) for name in source.model.layer_names]) + 2
    rows = [f"conservation per layer on {n} examples of {spec}, zero references, target 0 "
            "(largest |Σ in − Σ out| / (1 + |Σ out|); float rounding means exact):",
            f"{'layer':{width}s}" + "".join(f"{m:>18s}" for m in TRACE_METHODS)]
    for name in source.model.layer_names:
        if any(name in t for t in tables.values()):
            rows.append(f"{name:{width}s}" + "".join(
                f"{tables[m][name]:18.2g}" if name in tables[m] else f"{'-':>18s}" for m in TRACE_METHODS))
    return rows


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        parts = [v.strip() for v in text.split(",")]
        if any(not v.isdigit() for v in parts):
            raise ValueError(text)
        shape = tuple(int(v) for v in parts)
    except ValueError:
        raise CliError(f"--input-shape {text!r} is not a comma-separated list of sizes",
                       "give the shape of one example without the batch axis, e.g. 4,200") from None
    if not shape or min(shape) < 1:
        raise CliError(f"--input-shape {text!r} must list positive sizes", "e.g. --input-shape 4,200")
    return shape


def _convert_unchecked(source: Source, x: np.ndarray) -> Any:
    import torch

    from ..errors import InputError, UnsupportedLayerError
    from ..frontends.torch import convert_module
    try:
        return convert_module(source.module, torch.from_numpy(x[:2]), check=False)
    except UnsupportedLayerError as exc:
        raise _unsupported(source.spec, exc) from exc
    except InputError as exc:  # the module itself fails on inputs of this shape
        raise CliError(f"{source.spec}: {_text(exc)}",
                       "give --input-shape as the shape of one example the module's forward expects") from exc


def layer_table(model: Any) -> list[str]:
    """One row per layer: name, type, inputs and, for nonlinearities, the rule of each method."""
    from ..layers.activations import Activation
    from ..methods import get_method, rule_resolver
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
