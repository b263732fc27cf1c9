"""The command line: the argument parser, ``main`` and the one-line error report."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Sequence

from .check import cmd_check
from .common import CliError, _fix, _problem, _text
from .genome import add_genome_options, add_merge_parser, with_genome
from .output import Terminated, signals_as_exceptions
from .plot import cmd_plot
from ..methods import METHODS
from .score import REFERENCE_KINDS, cmd_score
from .sources import MODEL_FORMATS

PROG = "deeplift"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``deeplift: error:`` line like every other error."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(message, f"see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="DeepLIFT importance scores from the command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{score,plot,check,merge}", parser_class=_Parser)
    _score_parser(sub)
    _plot_parser(sub)
    _check_parser(sub)
    add_merge_parser(sub)
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
    p.add_argument("--method", metavar="METHOD",
                   help=f"{', '.join(METHODS)} (also the original library's names, e.g. "
                   "revealcancel); default rescale (the bundled example: genomics_default)")
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
    add_genome_options(p)
    p.set_defaults(handler=with_genome(cmd_score))


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
    p.add_argument("--trace", metavar="INPUTS", help="per layer, the conservation error of its rule on "
                   "the first examples of INPUTS (.npy/.npz/.h5/FASTA)")
    p.add_argument("--weights", metavar="STATE_DICT", help="state dict for a package.module:object model")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_check)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deeplift`` console script; returns the exit status."""
    if argv is None:  # a process of our own: keep freed memory for reuse (see deeplift.allocator)
        from ..allocator import keep_freed_memory
        keep_freed_memory()
        for stream in (sys.stdout, sys.stderr):  # names from a damaged file print escaped
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
    console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise CliError("no command given", "run 'deeplift score' (the bundled example), or see 'deeplift --help'")
        with signals_as_exceptions():
            return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"{PROG}: terminated by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:  # whoever read our output stopped (e.g. `| head`): not an error of ours
        if console:  # as the Python docs advise, so that the exit-time flush stays quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        status, message = _error_line(exc)
        print(f"{PROG}: error: {_printable(message, sys.stderr)}", file=sys.stderr)
        return status


def _error_line(exc: Exception) -> tuple[int, str]:
    from ..errors import DeepLiftError
    if isinstance(exc, CliError):
        return 2, _text(exc)
    if isinstance(exc, DeepLiftError):
        return 2, f"{_problem(exc)}; {_fix(exc, 'check the inputs and options (see --help)')}"
    if isinstance(exc, FileNotFoundError):
        return 2, f"{exc.filename or _text(exc)} does not exist; check the path"
    if isinstance(exc, PermissionError):
        return 2, f"permission denied: {exc.filename or _text(exc)}; choose a path you can write to"
    if _out_of_memory(exc):
        return 2, "out of memory; lower --batch-size (or --n-references / --steps)"
    if isinstance(exc, OSError):
        from .output import os_error_reason
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return 2, f"file system error{where}: {os_error_reason(exc)}; check the paths and free space"
    if isinstance(exc, RecursionError):
        return 2, "a file is nested too deeply to read; check the input files"
    return 1, (f"unexpected {type(exc).__name__}: {_text(exc)[:300]}; rerun with --debug to see the "
               "traceback, and please report it")


def _printable(text: str, stream: Any) -> str:
    """Text a damaged file put into a message (e.g. undecodable names) escaped, not a crash."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text
                                              or "DefaultCPUAllocator" in text)


def _version() -> str:
    from .. import __version__
    return __version__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
