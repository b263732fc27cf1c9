"""``deeplift score MODEL [MODEL ...] --genome G.fa --regions R.bed ...`` and ``deeplift merge``.

Glue only: options are checked and turned into a :class:`deeplift.genome.run.GenomeRun`; the
models load through the same code as ``deeplift score`` and every chunk is scored by
``deeplift.attribute``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import CliError, _text
from .output import check_output_path
from .score import method_name, parse_target, resolve_target_names

GENOME_OPTIONS = ("genome", "regions", "width")


def add_genome_options(p: argparse.ArgumentParser) -> None:
    """The genome-scale options of ``deeplift score`` (and its extra MODEL arguments)."""
    p.add_argument("more_models", nargs="*", metavar="MODEL",
                   help="with --genome: more models, whose scores are averaged (an ensemble)")
    g = p.add_argument_group("genome scale (MODEL [MODEL ...] --genome G.fa --regions R.bed --width W "
                             "--out OUT.h5; rerun the same command to resume)")
    g.add_argument("--genome", metavar="FASTA", help="genome FASTA (indexed with a .fai, made if missing)")
    g.add_argument("--regions", metavar="BED", help="BED or narrowPeak regions (centred on the summit)")
    g.add_argument("--width", type=int, metavar="W", help="window length the model takes, centred on each region")
    g.add_argument("--bigwig", metavar="OUT.bw", help="also a bigWig of each base's contribution")
    g.add_argument("--modisco", metavar="DIR", help="also TF-MoDISco-lite inputs DIR/ohe.npz, DIR/shap.npz")
    g.add_argument("--revcomp-average", action="store_true",
                   help="average with the scores of the reverse complement")
    g.add_argument("--float16", action="store_true", help="store contributions as float16 (half the size)")
    g.add_argument("--chunk-size", type=int, metavar="C",
                   help="regions per chunk: the unit of resume, sharding and Ray work (256)")
    g.add_argument("--shard", metavar="I/N", help="score only shard I of N (I from 0); join with deeplift merge")
    g.add_argument("--workers", type=int, metavar="K", help="score on K Ray workers (a local Ray instance)")
    g.add_argument("--ray-address", metavar="ADDR", help="score on an existing Ray cluster (e.g. auto)")


def add_merge_parser(sub: Any) -> None:
    p = sub.add_parser("merge", help="join the --shard outputs of a genome-scale run",
                       description="Join OUT.h5 files written with --shard 0/N .. N-1/N into the "
                       "file one unsharded run writes.")
    p.add_argument("out", metavar="OUT.h5", help="the merged file (must not exist)")
    p.add_argument("shards", nargs="+", metavar="SHARD.h5", help="every shard file of the run")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_merge)


def with_genome(cmd_score: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The ``score`` handler: genome-scale scoring when its options are given, else ``cmd_score``."""
    def handler(args: argparse.Namespace) -> int:
        return cmd_genome_score(args) if genome_requested(args) else cmd_score(args)
    return handler


def genome_requested(args: argparse.Namespace) -> bool:
    """True when ``deeplift score`` was given genome-scale options (or several models)."""
    if any(getattr(args, o, None) is not None for o in GENOME_OPTIONS):
        return True
    if getattr(args, "more_models", None):
        raise CliError("more than two positional arguments were given, but without --genome "
                       "'deeplift score' takes MODEL INPUTS",
                       "score regions of a genome with MODEL [MODEL ...] --genome G.fa --regions R.bed --width W")
    return False


def cmd_merge(args: argparse.Namespace) -> int:
    from ..genome.store import merge_shards
    out = Path(args.out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise CliError(f"merge output {out} must end in .h5", "e.g. deeplift merge all.h5 shard*.h5")
    for s in args.shards:
        if not Path(s).is_file():
            raise CliError(f"shard file {s} does not exist", "check the path")
    n = merge_shards(out, args.shards)
    print(f"wrote {out}: {n} regions from {len(args.shards)} shards")
    return 0


# -- score --------------------------------------------------------------------------------------


def cmd_genome_score(args: argparse.Namespace) -> int:
    from ..genome.bigwig import task_bigwig_paths, write_bigwig
    from ..genome.fasta import Genome
    from ..genome.modisco import write_modisco_inputs
    from ..genome.run import DEFAULT_CHUNK_SIZE, GenomeRun, run_genome
    from ..genome.store import task_groups
    opts = _check_options(args)
    say = (lambda *a: None) if args.quiet else print
    specs = [s for s in [args.model, args.inputs, *args.more_models] if s is not None]
    reads = [("model", s) for s in specs] + [("genome", args.genome), ("regions", args.regions)]
    for option, path in (("--out", opts["out"]), ("--bigwig", args.bigwig)):
        if path is not None:
            check_output_path(Path(path), option, reads)
    job, task_names, model_ids = _load_job(args, specs, opts)
    fingerprint = _fingerprint(args, opts, model_ids, job)
    metadata = {"models": specs or ["bundled example"], "method": job.method, "targets": job.targets,
                "task_names": task_names, "references": job.references, "seed": job.seed,
                "n_references": job.n_references if job.references in ("shuffle", "dinuc-shuffle") else None,
                "revcomp_average": job.revcomp, "width": args.width, "genome": args.genome,
                "regions": args.regions, "versions": _versions()}
    run = GenomeRun(job=job, genome=args.genome, regions=args.regions, width=args.width, out=opts["out"],
                    task_names=task_names, fingerprint=fingerprint, metadata=metadata,
                    chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, shard=opts["shard"],
                    float16=args.float16, workers=args.workers, ray_address=args.ray_address,
                    use_gpu=args.device == "cuda", progress=not args.quiet)
    n_models = len(job.models)
    say(f"models: {', '.join(specs) or 'bundled example'}" + (f" (averaged over {n_models})" if n_models > 1 else ""))
    say(f"method {job.method}, references {_describe_refs(job)}, targets {', '.join(task_names)}"
        + (", averaged with the reverse complement" if job.revcomp else ""))
    summary = run_genome(run, say)  # DeepLiftErrors become one line in cli.parser.main
    if summary.already_complete:
        say(f"{run.out} is already complete (same options); nothing to score")
    else:
        say(f"wrote {run.out}: {summary.n_regions} regions x {len(task_names)} target(s), (N, 4, {args.width})")
    if args.bigwig or args.modisco:
        sizes = Genome(args.genome).sizes
        if args.bigwig:
            for path, group in zip(task_bigwig_paths(args.bigwig, task_names), task_groups(task_names)):
                write_bigwig(run.out, path, sizes, group)
                say(f"wrote {path}")
        if args.modisco:
            for path in write_modisco_inputs(run.out, args.modisco, task_names):
                say(f"wrote {path}")
    rate = summary.n_scored / summary.seconds if summary.seconds > 0 else float("inf")
    line = (f"scored {summary.n_scored} of {summary.n_regions} regions in {summary.seconds:.1f} s "
            f"({rate:.1f} regions/s); largest |summation-to-delta error| {summary.max_abs_delta:.2g}")
    if summary.unknown_positions:
        line += (f"; {summary.unknown_positions} window positions were N or off a chromosome end "
                 "(all-zero, scored 0)")
    print(line)
    return 0


def _check_options(args: argparse.Namespace) -> dict:
    from ..genome.scoring import GENOME_METHODS, GENOME_REFERENCES
    missing = [f"--{o}" for o in GENOME_OPTIONS if getattr(args, o) is None]
    if missing:
        raise CliError(f"genome-scale scoring needs --genome, --regions and --width; {', '.join(missing)} "
                       "missing", "e.g. --genome hg38.fa --regions peaks.narrowPeak --width 2114")
    for path, what in ((args.genome, "--genome"), (args.regions, "--regions")):
        if not Path(path).is_file():
            raise CliError(f"{what} {path} does not exist", "check the path")
    if args.width < 1:
        raise CliError(f"--width must be a positive number of bases, got {args.width}", "e.g. --width 1000")
    if args.out is None or Path(args.out).suffix.lower() not in (".h5", ".hdf5"):
        raise CliError("genome-scale scores go to an HDF5 file" + (f", not {args.out}" if args.out else ""),
                       "give --out OUT.h5")
    method = method_name(args.method or "rescale")
    if method not in GENOME_METHODS:
        raise CliError(f"--method {args.method} gives no hypothetical contributions, which the genome-scale "
                       "outputs hold", f"use one of {', '.join(GENOME_METHODS)}")
    refs = args.references or "zeros"
    if refs not in GENOME_REFERENCES:
        raise CliError(f"--references {refs}: genome-scale scoring makes references per region",
                       f"use one of {', '.join(GENOME_REFERENCES)}")
    if args.n_references is not None and (refs not in ("shuffle", "dinuc-shuffle") or args.n_references < 1):
        raise CliError(f"--n-references {args.n_references} needs --references shuffle/dinuc-shuffle and "
                       "a value of at least 1", "e.g. --references dinuc-shuffle --n-references 20")
    for name in ("batch_size", "chunk_size", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {value}", "give a positive integer")
    if args.hypothetical:
        raise CliError("--hypothetical is implied at genome scale (shap/seq holds hypothetical "
                       "contributions, projected_shap/seq the observed bases')", "drop --hypothetical")
    if args.steps is not None:
        raise CliError("--steps applies to integrated gradients, not to genome-scale scoring", "drop --steps")
    if args.weights and len([s for s in [args.model, args.inputs, *args.more_models] if s]) > 1:
        raise CliError("--weights with several models is ambiguous",
                       "save each model with its weights (.pt2 or .keras) and list the files")
    if args.workers is not None or args.ray_address is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CliError("--workers/--ray-address need Ray, which is not installed",
                           "pip install 'deeplift[ray]', or drop those options to score in this process") from None
    shard = _parse_shard(args.shard)
    if shard is not None and (args.bigwig or args.modisco):
        raise CliError("--bigwig/--modisco describe all regions, but --shard scores a part",
                       "merge the shards with 'deeplift merge', then export (rerun without --shard on the merged file)")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CliError("--device cuda was asked for but torch sees no CUDA device", "use --device cpu")
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a directory", "give a file name ending in .h5")
    return {"out": out, "shard": shard, "references": refs, "method": method}


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise CliError(f"--shard {text!r} must be I/N with 0 <= I < N", "e.g. --shard 0/8 ... --shard 7/8")
    return int(m.group(1)), int(m.group(2))


def _load_job(args: argparse.Namespace, specs: list[str], opts: dict):
    """Load and convert every model, resolve the targets; returns (job, task names, model ids)."""
    from ..genome.scoring import ScoreJob
    from .sources import load_source
    loaded = []
    for spec in specs or [None]:
        source = load_source(spec, args.weights)
        model, layout = _convert(source, args.width, args)
        loaded.append((source, model, layout))
    source0, model0, _ = loaded[0]
    target = resolve_target_names(parse_target(args.target, 0), source0.task_names)
    layer, n_units = _target_units(model0, loaded[0][2], args.width, args.target_layer)
    for source, model, layout in loaded[1:]:
        if _target_units(model, layout, args.width, args.target_layer)[1] != n_units:
            raise CliError(f"the models disagree on the target layer's size ({source0.spec} vs {source.spec})",
                           "an ensemble must be of models with the same outputs (e.g. the folds of one model)")
    wanted = list(range(n_units)) if target == "all" else (target if isinstance(target, list) else [target])
    for t in wanted:
        if not -n_units <= t < n_units:
            raise CliError(f"--target {t} is out of range: layer {layer!r} has {n_units} output unit(s)",
                           f"use 0..{n_units - 1} or all")
    targets = [t % n_units for t in wanted]
    names = source0.task_names
    task_names = [names[t] if names and t < len(names) else f"task{t}" for t in targets]
    method = opts["method"]
    job = ScoreJob(models=[m for _, m, _ in loaded], layouts=[lay for _, _, lay in loaded], targets=targets,
                   target_layer=args.target_layer, method=method, references=opts["references"],
                   n_references=args.n_references or 10, seed=args.seed, revcomp=args.revcomp_average,
                   batch_size=args.batch_size or 256)
    return job, task_names, [_model_id(s, args.weights) for s, _, _ in loaded]


def _convert(source: Any, width: int, args: argparse.Namespace) -> tuple[Any, str]:
    """The deeplift Model of a source and the one-hot layout it takes at this width."""
    import torch

    from .inputs import onehot_layout
    from .sources import convert_source, module_accepts
    if source.model is not None:
        layout = onehot_layout(source.model)
        shape = source.model.layers[source.model.input_names[0]].shape
        want = (4, width) if layout == "channels_first" else (width, 4)
        if layout is None or any(d is not None and d != w for d, w in zip(shape, want)):
            raise CliError(f"model {source.spec} takes inputs of shape {shape}, not one-hot windows of "
                           f"--width {width}", "set --width to the model's input length")
        model = source.model
    else:
        example = np.zeros((2, 4, width), dtype=np.float32)
        layout = "channels_first"
        if not module_accepts(source, example):
            example, layout = example.transpose(0, 2, 1).copy(), "channels_last"
            if not module_accepts(source, example):
                raise CliError(f"{source.spec} accepts neither (N, 4, {width}) nor (N, {width}, 4) one-hot "
                               "windows", "set --width to the model's input length")
        model = convert_source(source, example)
    if args.dtype is not None:
        model = model.to(getattr(torch, args.dtype))
    if args.device != "cpu":
        model = model.to(args.device)
    return model, layout


def _target_units(model: Any, layout: str, width: int, target_layer: str | None) -> tuple[str, int]:
    import torch

    from ..plan import default_target_layer
    from ..errors import InputError
    try:
        layer = default_target_layer(model) if target_layer is None else model.resolve(target_layer, "target layer")
    except InputError as exc:
        raise CliError(f"--target-layer: {_text(exc)}", "run 'deeplift check MODEL' to see the layer names") from exc
    shape = (1, 4, width) if layout == "channels_first" else (1, width, 4)
    x = torch.zeros(shape, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        return layer, int(model.forward_all([x], [layer])[layer][0].numel())


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_id(source: Any, weights: str | None) -> dict:
    """What identifies a model's numbers: its file's content, or its spec and weights."""
    ident: dict[str, Any] = {"spec": source.spec}
    if Path(source.spec).is_file():
        ident = {"file": Path(source.spec).name, "sha256": _sha256(source.spec)}
    if weights:
        ident["weights_sha256"] = _sha256(weights)
    return ident


def _fingerprint(args: argparse.Namespace, opts: dict, model_ids: list[dict], job: Any) -> dict:
    """The options that change the numbers; a resumed run must match them exactly."""
    from ..genome.fasta import Genome
    from ..genome.run import DEFAULT_CHUNK_SIZE
    sizes = Genome(args.genome).sizes
    return {
        "models": model_ids, "method": job.method, "targets": job.targets,
        "target_layer": args.target_layer, "references": job.references,
        "n_references": job.n_references if job.references in ("shuffle", "dinuc-shuffle") else None,
        "seed": job.seed, "revcomp_average": job.revcomp, "width": args.width,
        "regions_sha256": _sha256(args.regions),
        "genome_sha256": hashlib.sha256(repr(sorted(sizes.items())).encode()).hexdigest(),
        "float16": bool(args.float16), "batch_size": job.batch_size,
        "chunk_size": args.chunk_size or DEFAULT_CHUNK_SIZE, "dtype": args.dtype, "device": args.device,
    }


def _describe_refs(job: Any) -> str:
    if job.references in ("shuffle", "dinuc-shuffle"):
        return f"{job.references} x{job.n_references} per region (seed {job.seed}, drawn per region)"
    return job.references


def _versions() -> dict:
    import platform

    import torch

    import deeplift
    return {"deeplift": deeplift.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
