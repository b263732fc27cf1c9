"""Fused elementwise kernels for the rules: ``torch.compile`` where it works, the same function
run eagerly where it does not.

A DeepLIFT rule is a dozen elementwise steps (differences, ratios, near-zero limits, the
RevealCancel finite differences). Run one PyTorch op at a time, each step reads and writes an
activation-sized tensor, and in a plain process each new tensor also page-faults its memory in
(``benchmarks/bench_methods.py``, BPNet-like model: reveal_cancel 3.5x one gradient op by op,
2.6x fused; 10 shuffled references per sequence 17x and 11x). So the rules write their
elementwise math as plain functions of tensors and call them through :class:`FusedKernel`.

When to fuse is the caller's choice (``deeplift.attribute(..., fuse=)``): ``True`` always,
``False`` never, ``"auto"`` (the default) once the work is large enough to repay compiling (a few
seconds, once per process; PyTorch caches the result on disk for later processes): when one
call's rule work, or the rule work of this process's calls so far, reaches ``AUTO_WORK``
element-operations (:func:`resolve`). A short script or a test never waits for a compiler; a
genome-scale run, or a loop over many batches, runs fused after its first seconds. A kernel that
cannot compile (no C++ compiler, an unsupported platform) runs eagerly from then on, with the
same numbers up to float rounding; :func:`status` says which kernels fell back and why.
"""

from __future__ import annotations

import threading
from typing import Callable

from torch import Tensor

#: "auto" fuses once a call's, or the process's, rule work reaches this many element-operations
#: (per-pair activation elements of every nonlinearity, summed over the pairs): ~0.5e9, about
#: where RevealCancel's op-by-op overhead (~0.9x one gradient per 3.7e7 element-operations on
#: the BPNet-like benchmark model) has cost as long as compiling (a few seconds; ``resolve``)
AUTO_WORK = 1 << 29
#: under "auto", tensors smaller than this stay eager even in a fused run (a compiled call has a
#: fixed cost of tens of microseconds)
AUTO_MIN_ELEMENTS = 1 << 16

_work_done = 0
_work_lock = threading.Lock()


def resolve(setting: "bool | str", work: int) -> "bool | str":
    """The fuse setting of one call that does ``work`` element-operations of rules: ``True`` and
    ``False`` stay; ``"auto"`` becomes ``"large"`` (fuse tensors of at least
    ``AUTO_MIN_ELEMENTS``) when this call plus the earlier unfused calls of the process reach
    ``AUTO_WORK``, else False (and the call's work counts towards it)."""
    global _work_done
    if setting != "auto":
        return setting
    if work <= 0:
        return False
    with _work_lock:
        if _work_done + work >= AUTO_WORK:
            return "large"
        _work_done += work
    return False


def should_fuse(setting: "bool | str", t: "Tensor | int") -> bool:
    """Whether a rule on tensors like ``t`` (or of ``t`` elements) runs its fused kernel under a
    resolved setting (see :func:`resolve`)."""
    if setting is True or setting is False:
        return setting
    return setting == "large" and (t if isinstance(t, int) else t.numel()) >= AUTO_MIN_ELEMENTS


#: at most this many compiled variants of one kernel (argument ranks, dtypes, devices...); calls
#: with further kinds of arguments run eagerly
MAX_VARIANTS = 32


def _signature(arg) -> object:
    """What the compiler specializes a kernel on, for one argument: a tensor's rank, dtype,
    device, which sizes are 1 (broadcast) and contiguity; a number's type (its value stays
    symbolic). Each signature gets a compiled variant of its own (:class:`FusedKernel`)."""
    if isinstance(arg, Tensor):
        return (arg.dim(), arg.dtype, arg.device.type, tuple(s <= 1 for s in arg.shape),
                arg.is_contiguous())
    return type(arg)


def _own_code(fn: Callable, name: str) -> Callable:
    """A function calling ``fn`` whose code object is its own. The compiler keeps its compiled
    graphs, and a limit of eight recompilations, per code object: kernels sharing one (closures
    of one ``def``, or ``functools.partial``, which it wraps in a shared frame) would evict each
    other and, past the limit, silently run eagerly with its guards still checked."""
    def call(*args):
        return fn(*args)
    call.__code__ = call.__code__.replace(co_name=name.replace(" ", "_"))
    call.__name__ = call.__qualname__ = name
    return call


class FusedKernel:
    """``fn`` (a function of tensors and Python numbers), compiled on first fused use: one
    compiled variant per :func:`_signature` of its arguments."""

    _lock = threading.Lock()

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "kernel")
        self._variants: dict[tuple, Callable] = {}
        self.failure: str | None = None  # why compilation is not used, once it failed

    def __call__(self, fuse: bool, *args):
        if fuse and self.failure is None:
            compiled = self._compiled_fn(tuple(_signature(a) for a in args))
            if compiled is not None:
                try:
                    return compiled(*args)
                except Exception as error:  # noqa: BLE001 - the compiler's failures have many types
                    out = self.fn(*args)  # an error of the arguments themselves raises here
                    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    self.failure = f"{type(error).__name__}: {first_line}"
                    return out
        return self.fn(*args)

    @property
    def compiled(self) -> bool:
        """Whether any variant has been compiled (or is being)."""
        return bool(self._variants)

    def _compiled_fn(self, signature: tuple) -> Callable | None:
        """The compiled variant for ``signature`` (None past ``MAX_VARIANTS``: eager)."""
        variant = self._variants.get(signature)
        if variant is None:
            with self._lock:
                variant = self._variants.get(signature)
                if variant is None:
                    if len(self._variants) >= MAX_VARIANTS:
                        return None
                    import torch
                    name = f"{self.name} {len(self._variants)}"
                    variant = torch.compile(_own_code(self.fn, name), dynamic=True)
                    self._variants[signature] = variant
        return variant


_KERNELS: dict[object, FusedKernel] = {}


def kernel(key: object, make: Callable[[], Callable], name: str) -> FusedKernel:
    """The kernel registered under ``key``, made by ``make()`` the first time (one compiled
    kernel per distinct function: e.g. per nonlinearity, not per layer)."""
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS.setdefault(key, FusedKernel(make(), name))
    return k


def status() -> dict[str, str]:
    """Kernel name -> "compiled", "not used yet" or the reason it runs eagerly."""
    return {k.name: (k.failure or ("compiled" if k.compiled else "not used yet"))
            for k in _KERNELS.values()}
