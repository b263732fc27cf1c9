"""``deeplift score``, and the bundled example's motif AUROC check."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import CliError, _fix, _problem, _shape, _text
from .output import check_free_space, check_output_path, expected_size, write_output
from .inputs import Inputs, check_input_shapes, onehot_layout, read_array_file, read_inputs
from ..plan import default_target_layer
from .sources import Source, convert_source, load_source

REFERENCE_KINDS = ["zeros", "background", "shuffle", "dinuc-shuffle"]
SHUFFLE_KINDS = {"shuffle", "dinuc-shuffle"}
OUT_SUFFIXES = (".npz", ".h5", ".hdf5")


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


def method_name(text: str) -> str:
    """The method's canonical name from any spelling ``deeplift.attribute`` accepts."""
    from ..errors import InputError
    from ..methods import get_method
    try:
        return get_method(text).name
    except InputError as exc:
        raise CliError(f"--method: {_text(exc)}", "see 'deeplift score --help'") from exc


def score_options(args: argparse.Namespace, bundled: bool) -> ScoreOptions:
    """Check the option values before any loading, so mistakes fail fast."""
    from ..methods import get_method
    method = method_name(args.method or ("genomics_default" if bundled else "rescale"))
    takes_references = get_method(method).takes_references
    refs = args.references
    if refs is None:
        refs = "dinuc-shuffle" if bundled and takes_references else "zeros"
    elif not takes_references:
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
    if args.hypothetical and not get_method(method).uses_reference:
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
    from .. import references
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
    from ..arrays import check_one_hot
    from ..errors import InputError
    try:
        check_one_hot(x, path, needed_by="--references dinuc-shuffle")
    except InputError as exc:
        raise CliError(_text(exc), "use --references zeros or background") from exc


def cmd_score(args: argparse.Namespace) -> int:
    if args.model is not None and args.inputs is None:
        raise CliError("MODEL was given without INPUTS",
                       "give an inputs file after the model, or neither to run the bundled example")
    bundled = args.model is None
    opts = score_options(args, bundled)
    replacing = check_output_path(opts.out, "--out", _files_read(args, opts))
    source = load_source(args.model, args.weights)
    inputs = _bundled_inputs() if bundled else read_inputs(args.inputs, source)
    model = convert_source(source, inputs.data)
    model = _place(model, opts)
    check_input_shapes(model, inputs)
    opts.target = resolve_target_names(opts.target, source.task_names)
    refs = make_references(opts.references, opts.n_references, args.seed, inputs, model)
    plan = make_score_plan(model, inputs, refs, opts, args)
    layer = plan.target.layer
    tasks = source.task_names if layer == default_target_layer(model) else None  # names of the logits
    say = (lambda *a: None) if args.quiet else print
    _describe_run(say, source, model, inputs, opts, plan.target.indices, tasks, args.seed)
    arrays = inputs.data.values() if isinstance(inputs.data, dict) else [inputs.data]
    check_free_space(opts.out, "--out", expected_size(arrays, len(plan.target.indices), model.dtype.itemsize))
    scores, delta, seconds = run_plan(plan)
    meta = _metadata(source, model, inputs, opts, args, plan.target.indices, layer, tasks, delta)
    _save(opts.out, scores, inputs, model, meta)
    say(f"wrote {opts.out}: scores {_shape(_first(scores).shape)}")
    if bundled and tasks:
        for line in motif_auroc_lines(_first(scores), inputs.data, plan.target.indices, tasks,
                                      args.hypothetical):
            print(line)
    print(_summary(inputs, seconds, meta["max_abs_delta"])
          + (f"; replaced the existing {opts.out}" if replacing else ""))
    return 0


def _files_read(args: argparse.Namespace, opts: ScoreOptions) -> list[tuple[str, Any]]:
    """The files this run reads, which --out must never overwrite."""
    refs = None if opts.references in REFERENCE_KINDS else opts.references
    return [("model", args.model), ("inputs", args.inputs), ("references", refs),
            ("weights", args.weights)]


def _bundled_inputs() -> Inputs:
    from ..examples.motif_model import load_example_data
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


def make_score_plan(model: Any, inputs: Inputs, refs: Any, opts: ScoreOptions,
                    args: argparse.Namespace) -> Any:
    """The library's plan of this run (inputs, references, targets, batches), with the CLI's
    wording for a bad --target / --target-layer."""
    from ..errors import DeepLiftError
    from ..methods import get_method
    from ..plan import SeveralTargets, make_plan
    target = SeveralTargets(opts.target) if isinstance(opts.target, list) else opts.target
    try:
        plan = make_plan(model, inputs.data, references=refs, method=opts.method, target=target,
                         target_layer=_parse_layer(args.target_layer),
                         batch_size=args.batch_size or 256, steps=args.steps or 50,
                         hypothetical=args.hypothetical,
                         return_delta=get_method(opts.method).takes_references, seed=args.seed)
    except DeepLiftError as exc:
        message = _text(exc)
        if "target layer" in message:
            raise CliError(f"--target-layer: {message}", "run 'deeplift check MODEL' to see the layer names") from exc
        if message.startswith("target "):
            raise CliError(f"--{message}", "use a unit index of the target layer, a list 0,2, or all") from exc
        raise CliError(f"scoring failed: {_problem(exc)}", _fix(exc, "check the inputs and options "
                       "(deeplift score --help)")) from exc
    plan.progress = plan.n_batches > 1 and not args.quiet
    return plan


def run_plan(plan: Any) -> tuple[Any, Any, float]:
    """Execute the plan; returns scores, the summation-to-delta errors (or None), seconds."""
    from ..errors import DeepLiftError
    from ..plan import execute
    start = time.perf_counter()
    try:
        result = execute(plan)
    except DeepLiftError as exc:
        raise CliError(f"scoring failed: {_problem(exc)}", _fix(exc, "check the inputs and options "
                       "(deeplift score --help)")) from exc
    seconds = time.perf_counter() - start
    scores, delta = result if plan.return_delta else (result, None)
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


def _save(out: Path, scores: Any, inputs: Inputs, model: Any, meta: dict) -> None:
    from ..io import encode_scores
    extra: dict[str, Any] = {}
    if isinstance(scores, tuple):  # several input layers: one scores/inputs array per input
        for name, s in zip(model.input_names, scores):
            extra[f"scores_{name}"] = s
            extra[f"inputs_{name}"] = inputs.data[name]
    if inputs.record_names is not None:
        names = np.array(inputs.record_names)
        extra["names"] = names.astype("S") if out.suffix.lower() != ".npz" else names
    first_inputs = inputs.data[model.input_names[0]] if isinstance(inputs.data, dict) else inputs.data
    write_output(out, "--out", encode_scores(out.suffix, _first(scores), first_inputs, extra=extra,
                                             metadata=meta))


def _first(scores: Any) -> Any:
    return scores[0] if isinstance(scores, tuple) else scores


def _describe_run(say: Callable, source: Source, model: Any, inputs: Inputs, opts: ScoreOptions,
                  indices: list[int], tasks: list[str] | None, seed: int) -> None:
    shapes = ", ".join(_shape(model.layers[n].shape) for n in model.input_names)
    say(f"model: {source.spec} ({len(model.layer_names)} layers, input {shapes})")
    what = f"one-hot DNA ({inputs.layout})" if inputs.layout else "arrays"
    say(f"inputs: {inputs.n} examples from {inputs.path}, {what}")
    refs = opts.references + (f" x{opts.n_references} per example (seed {seed})" if opts.n_references else "")
    if not _takes_references(opts.method):
        refs = "none (gradient method)"
    shown = ", ".join(tasks[i] if tasks and i < len(tasks) else str(i) for i in indices[:10])
    more = f", ... ({len(indices)} in all)" if len(indices) > 10 else ""
    say(f"method {opts.method}, references {refs}, targets {shown}{more}")
    if source.note:
        say(f"note: {source.note}")


def _takes_references(method: str) -> bool:
    from ..methods import get_method
    return get_method(method).takes_references


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
    from ..examples.motif_model import load_example_data
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
