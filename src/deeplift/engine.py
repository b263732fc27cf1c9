"""One batched pass: forward on inputs and references together, then the multipliers backward.

The forward runs once over ``cat([X, R])`` where ``X`` holds the distinct examples of the batch and
``R`` the distinct references; a pair ``p`` is (example ``x_idx[p]``, reference ``r_idx[p]``), so
an example scored against many references, or many examples against one shared reference set, are
each run forward once (a shared set once per call, see ``PairRunner``). The
backward runs over the pairs only, for all targets at once (a leading target axis on every
multiplier tensor). Shared references stay one row wherever a rule can broadcast them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .genomics import hypothetical_contributions, one_hot_axis
from .graph import Model
from .conservation import WorstError, worst_of
from .layers.activations import Activation
from .layers.base import (Constant, Input, Layer, Multipliers, SignedScale, SignPreservingLinear,
                          SignSplitLinear, Split, broadcast_shape, piece)
from .methods import Method


@dataclass(frozen=True)
class RuleOptions:
    """Numerical choices of the rules.

    ``near_zero``: below this |Δx| a nonlinearity uses its gradient at the reference (Rescale).
    ``max_routing``: ``"conserving"`` (default) routes a max-pool window's multiplier between the
    argmax of the input and the argmax of the reference so that summation-to-delta holds for any
    reference; ``"gradient"`` is the original library's rule (argmax of the input only).
    ``original_quirks``: reproduce the original's float32 details (RevealCancel pseudocounts,
    the reference gradient of sigmoid/tanh taken at f(r), every tied global max getting the full
    multiplier) — used to match its numbers, never the default.
    ``fuse``: compiled elementwise kernels for the rules: True, False or "auto" (see ``fusion``).
    """

    near_zero: float = 1e-7
    max_routing: str = "conserving"
    original_quirks: bool = False
    fuse: "bool | str" = "auto"


class PassState:
    """Everything the layers' rules read during a pass, computed lazily and cached."""

    def __init__(self, model: Model, x_values: dict[str, Tensor], r_values: dict[str, Tensor] | None,
                 x_idx: Tensor | None, r_idx: Tensor | None, rule_for: Callable[[Layer], str],
                 options: RuleOptions, forward_memos: dict[str, object] | None = None,
                 released: dict[str, tuple] | None = None) -> None:
        self.model = model
        self.forward_memos = forward_memos or {}
        self.x_values = x_values
        self.r_values = r_values
        self.x_idx = _simplify_index(x_idx)
        self.r_idx = _simplify_index(r_idx)
        self._rule_for = rule_for
        self.difference_based = r_values is not None
        self.options = options
        self._x: dict[str, Tensor] = {}
        self._r: dict[str, Tensor] = {}
        self._delta: dict[str, Tensor] = {}
        self._split: dict[str, Split] = {}
        self._cache: dict[tuple[str, str], object] = {}
        #: (per-example shape, dtype, device) of the layers whose values left the pass (or were
        #: never kept: ``released``, from a forward that keeps only what the backward reads)
        self._released: dict[str, tuple[tuple[int, ...], torch.dtype, torch.device]] = dict(
            released or {})
        #: which of ``x_values``/``r_values`` this pass may empty as its backward goes (a
        #: reference set shared by every batch of a call stays)
        self.owns_values = (True, True)
        #: True during the last backward of the pass: a layer's rule state is read for the last
        #: time by its own backward, which may then reuse it in place (see ``State``)
        self.final_backward = False
        #: True while a layer's backward runs on multipliers that nothing else holds: it may
        #: overwrite them (see ``State``)
        self.owns_incoming = False
        #: set by ``backward``: whether splits may be handed over (``take_split``), the layer
        #: whose backward runs, and the layers read after the backward (target, score layers)
        self.hand_over = False
        self.running: str | None = None
        self.keep: frozenset[str] = frozenset()
        self._order = {n: i for i, n in enumerate(model.layer_names)}
        #: layers whose example rows may be overwritten: the input whose split ``take_split``
        #: is computing, the layer whose values leave after the backward now running
        self._losing: set[str] = set()
        #: the blocks of equal runs of consecutive pairs of one example (``_x_runs``), found
        #: once per pass
        self._runs: list[tuple[int, ...]] | None = None

    # -- per-pair values --------------------------------------------------------------------------
    def x(self, name: str) -> Tensor:
        """The layer's output for the example of every pair, (P, ...)."""
        if name not in self._x:
            self._x[name] = _gather(self.x_values[name], self.x_idx, self.is_constant(name))
        return self._x[name]

    def r(self, name: str) -> Tensor:
        """The layer's output for the reference of every pair, (P, ...)."""
        if self.r_values is None:
            raise RuntimeError("reference activations are not computed for gradient methods")
        if name not in self._r:
            self._r[name] = _gather(self.r_values[name], self.r_idx, self.is_constant(name))
        return self._r[name]

    def pair_numel(self, name: str) -> int:
        """How many elements a per-pair tensor of layer ``name`` has (nothing is gathered)."""
        if isinstance(self.x_idx, int):
            pairs = self.x_idx
        elif self.x_idx is not None:
            pairs = len(self.x_idx)
        else:
            pairs = self.x_values[name].shape[0] if name in self.x_values else 0
        shape, _, _ = self.pair_shape(name, pairs)
        return math.prod(shape)

    def x_rows(self, name: str) -> tuple[Tensor, Tensor | None]:
        """``x(name)`` as (rows, index): ``rows.index_select(0, index)`` when index is a tensor,
        else ``rows`` itself (it broadcasts). A fused kernel gathers inside its loop instead of
        copying every example once per reference (``x`` does that copy)."""
        if name in self._x or self.is_constant(name) or self.x_idx is None:
            return self.x(name), None
        if isinstance(self.x_idx, int):
            return self.x_values[name][:1], None
        return self.x_values[name], self.x_idx

    def select_x_rows(self, t: Tensor) -> Tensor:
        """The rows of every pair's example from ``t``, aligned with the examples' forward rows."""
        return _gather(t, self.x_idx, False)

    def r_broadcast(self, name: str) -> Tensor:
        """Like :meth:`r`, but a reference shared by every pair comes back as one row that
        broadcasts, so elementwise work on it is done once instead of once per pair."""
        if isinstance(self.r_idx, int) and not self.is_constant(name) and self.r_values is not None:
            return self.r_values[name][:1]
        return self.r(name)

    def delta(self, name: str) -> Tensor:
        if name not in self._delta:
            if self.is_constant(name):
                self._delta[name] = torch.zeros_like(self.x_values[name])
            elif not self.difference_based:
                # gradient methods: "differences" from an all-zero reference (only signs are read)
                self._delta[name] = self.x(name)
            elif name not in self._x and self._x_runs(name) is not None:
                self._delta[name] = self._x_minus_by_runs(name, self.r_broadcast(name))
            else:
                self._delta[name] = self.x(name) - self.r(name)
        return self._delta[name]

    def owned_delta(self, name: str) -> Tensor:
        """``x − r`` of a layer as a new tensor the caller may overwrite (not cached: a rule that
        only needs it on the way to its own result computes it in place)."""
        if name in self._delta:
            return self._delta[name].clone()
        if self.is_constant(name) or not self.difference_based:
            return self.delta(name).clone()
        rows, index = self.x_rows(name)
        if index is None and self.values_to_lose(name) and rows.is_contiguous() and (
                rows.shape == broadcast_shape(rows.shape, self.r_broadcast(name).shape)):
            return rows.sub_(self.r_broadcast(name))  # its values are not read again
        if index is not None and self._x_runs(name) is not None:
            return self._x_minus_by_runs(name, self.r_broadcast(name))
        if index is not None:  # gathered into the result itself: no per-pair copy kept in the pass
            return rows.index_select(0, index).sub_(self.r_broadcast(name))
        return torch.sub(self.x(name), self.r_broadcast(name))

    def _x_runs(self, name: str) -> list[tuple[int, int, int, int]] | None:
        """``(first example row, examples, pairs per example, first pair)`` of each block of
        consecutive pairs whose examples come in runs of equal length (several references per
        example: the pairs of a batch come example by example, all runs full but maybe the first
        and last), when the blocks of layer ``name`` are large enough — ``RUN_ELEMENTS`` on
        average — that one broadcast subtraction per block costs less than gathering every
        pair's rows first (a pass over memory and a per-pair copy); else None."""
        if not isinstance(self.x_idx, Tensor) or self.x_idx.device.type != "cpu":
            return None  # (on a GPU the gather is one kernel launch, a block another)
        if self._runs is None:
            examples, counts = torch.unique_consecutive(self.x_idx, return_counts=True)
            blocks: list[list[int]] = []
            first = 0
            for example, count in zip(examples.tolist(), counts.tolist()):
                last = blocks[-1] if blocks else None
                if last is not None and count == last[2] and example == last[0] + last[1]:
                    last[1] += 1
                else:
                    blocks.append([example, 1, count, first])
                first += count
            self._runs = [tuple(b) for b in blocks]
        if len(self._runs) * RUN_ELEMENTS > self.pair_numel(name):
            return None
        return self._runs

    def _x_minus_by_runs(self, name: str, r: Tensor) -> Tensor:
        """``x(name) − r`` as a new tensor, a block of runs at a time (see ``_x_runs``): each
        example's row broadcast against its references' rows, written into the result."""
        rows = self.x_values[name]
        out = rows.new_empty(broadcast_shape((len(self.x_idx), *rows.shape[1:]), r.shape))
        for example, n_examples, per_example, first in self._x_runs(name):
            pairs = slice(first, first + n_examples * per_example)
            r_pairs = piece(r, pairs)
            if r_pairs.shape[0] != 1:
                r_pairs = r_pairs.view(n_examples, per_example, *r_pairs.shape[1:])
            torch.sub(rows[example:example + n_examples].unsqueeze(1), r_pairs,
                      out=out[pairs].view(n_examples, per_example, *out.shape[1:]))
        return out

    def release(self, name: str) -> None:
        """Forget everything about a layer once its backward is done: no later layer reads it
        (its consumers went backward before it), so its forward values and rule state go, as
        autograd frees what it saved. Keeps the peak memory of a pass near the forward's."""
        self.release_values(name)
        self.forward_memos.pop(name, None)  # (one its rule never read)
        for key in [k for k in self._cache if k[0] == name]:
            del self._cache[key]

    def release_values(self, name: str) -> None:
        """Forget a layer's values (its output, Δ and split), keeping the rule state it cached:
        after its backward in a pass of several, when no later pass reads them (see
        ``Layer.rereads_values``)."""
        if name not in self.x_values or self.is_constant(name):
            return
        v = self.x_values[name]
        self._released[name] = (tuple(v.shape[1:]), v.dtype, v.device)
        for d in (self._x, self._r, self._delta, self._split):
            d.pop(name, None)
        if self.owns_values[0]:
            self.x_values.pop(name)
        if self.owns_values[1] and self.r_values is not None and self.r_values is not self.x_values:
            self.r_values.pop(name, None)

    def split(self, name: str) -> Split:
        """``(Δ⁺, Δ⁻)`` of a layer's output, by that layer's own rule."""
        if name not in self._split:
            layer = self.model.layers[name]
            if isinstance(layer, Constant):
                z = self.delta(name)
                self._split[name] = (z, z)
            else:
                self._split[name] = layer.split(self)
        return self._split[name]

    def take_split(self, name: str, reader: Layer) -> tuple[Split, bool]:
        """``split(name)`` and whether ``reader`` may overwrite it (see ``State.take_split``):
        then the split and the layer's values leave the pass before ``reader`` computes, so
        its result can take their place rather than add to the peak."""
        layer = self.model.layers[name]
        if (not self.hand_over or self.running != reader.name or name in self.keep
                or not layer.hands_over_split
                or min(self.model.consumers(name), key=self._order.__getitem__) != reader.name):
            return self.split(name), False
        self._losing.add(name)
        try:
            split = self.split(name)
        finally:
            self._losing.discard(name)
        self.release(name)
        return split, True

    def values_to_lose(self, name: str) -> bool:
        """True while ``take_split`` computes the split of ``name`` that it hands over, or while
        the backward of ``name`` runs when its values leave after it, if the pass owns that
        layer's example rows and no other value or state of the pass overlaps them (a view kept
        by a later layer, the target, a score layer)."""
        if (name not in self._losing or name in self.keep or not self.owns_values[0]
                or name not in self.x_values):
            return False
        rows, index = self.x_rows(name)
        if index is not None:
            return False
        others = [v for d in (self.x_values, self._x) for n, v in d.items() if n != name]
        others += [v for d in (self.r_values or {}, self._r, self._delta) for v in d.values()]
        others += [t for n, split in self._split.items() if n != name for t in split]
        others += [t for (n, _), v in self._cache.items() if n != name
                   for t in (v if isinstance(v, (tuple, list)) else (v,)) if isinstance(t, Tensor)]
        return not any(_overlap(rows, t) for t in others)

    def is_constant(self, name: str) -> bool:
        return isinstance(self.model.layers[name], Constant)

    def pair_shape(self, name: str, batch: int) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
        """Shape, dtype and device of a layer's per-pair output with the batch axis set to ``batch``."""
        if name in self._released:
            shape, dtype, device = self._released[name]
            return (batch, *shape), dtype, device
        v = self.x_values[name]
        return (batch, *v.shape[1:]), v.dtype, v.device

    def rule(self, layer: Layer) -> str:
        return self._rule_for(layer)

    def forward_memo(self, name: str) -> object | None:
        """What the layer's forward kept for this pass, for the examples' forward rows (a forward
        over examples and references together has the examples' rows first); handed over, so
        that it leaves the pass once the reader has derived its own state from it."""
        memo = self.forward_memos.pop(name, None)
        if isinstance(memo, Tensor):
            return memo[: self.x_values[name].shape[0]]
        return memo

    def is_cached(self, layer: Layer, key: str) -> bool:
        return (layer.name, key) in self._cache

    def cached(self, layer: Layer, key: str, compute: Callable[[], object]):
        """Per-layer memo for rule state shared by ``split`` and ``backward`` (e.g. rescale factors)."""
        k = (layer.name, key)
        if k not in self._cache:
            self._cache[k] = compute()
        return self._cache[k]


def _simplify_index(idx: Tensor | None) -> "Tensor | int | None":
    """None for the identity, an int ``P`` when every pair uses row 0 (then rows are expanded,
    not copied), else the index itself."""
    if idx is None:
        return None
    if bool((idx == 0).all()):
        return len(idx)
    if bool((idx == torch.arange(len(idx), device=idx.device)).all()):
        return None
    return idx


def _gather(v: Tensor, idx: "Tensor | int | None", constant: bool) -> Tensor:
    if constant or idx is None:
        return v
    if isinstance(idx, int):
        return v[:1].expand(idx, *v.shape[1:])
    return v.index_select(0, idx)


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _overlap(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors' memory may overlap (the byte span from first to last element)."""
    if not isinstance(b, Tensor) or _storage(a) != _storage(b) or a.numel() == 0 or b.numel() == 0:
        return False

    def span(t: Tensor) -> tuple[int, int]:
        start = t.storage_offset()
        last = start + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))
        return start * t.element_size(), (last + 1) * t.element_size()
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _fresh_flags(layer: Layer, grads: list[Multipliers], incoming: Multipliers | None
                 ) -> list[bool]:
    """Which of a layer's returned multipliers are tensors of their own that nothing else holds
    (so a sum may be accumulated into them): the layer says its backward allocates
    (``fresh_multipliers``), and each is contiguous, single (no ``m⁻``), not sharing storage with
    the multipliers the layer received (``incoming``; None when they were the engine's own and
    handed over) nor with another returned one."""
    if not getattr(layer, "fresh_multipliers", False):
        return [False] * len(grads)
    taken = set() if incoming is None else {_storage(t) for t in incoming if t is not None}
    counts: dict[int, int] = {}
    for gp, _ in grads:
        counts[_storage(gp)] = counts.get(_storage(gp), 0) + 1
    return [gn is None and gp.is_contiguous() and _storage(gp) not in taken
            and counts[_storage(gp)] == 1 for gp, gn in grads]


def _accumulate(a: Multipliers, a_owned: bool, b: Multipliers, b_fresh: bool) -> Multipliers:
    """``a + b`` (see :func:`_add`), in place into whichever operand the engine owns. The
    result is always the engine's own (a residual's sum of two paths costs no allocation)."""
    (ap, an), (bp, bn) = a, b
    if an is None and bn is None and ap.shape == bp.shape and ap.dtype == bp.dtype:
        if a_owned:
            return ap.add_(bp), None
        if b_fresh:
            return bp.add_(ap), None
    return _add(a, b)


def _add(a: Multipliers | None, b: Multipliers) -> Multipliers:
    if a is None:
        return b
    (ap, an), (bp, bn) = a, b
    if an is None and bn is None:
        return ap + bp, None
    return ap + bp, (ap if an is None else an) + (bp if bn is None else bn)


def forward_together(model: Model, xs: Sequence[Tensor], rs: Sequence[Tensor], needed: Iterable[str],
                     memos: dict[str, object] | None = None, keep: set[str] | None = None,
                     dropped: dict[str, tuple] | None = None,
                     previous: dict[str, Tensor] | None = None
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One forward over ``cat([x, r])``; returns the x and r halves of every value (views);
    ``keep``, ``dropped``, ``previous``: see ``Model.forward_all``."""
    n = xs[0].shape[0]
    values = model.forward_all([torch.cat([x, r]) for x, r in zip(xs, rs)], needed, memos,
                               keep=keep, dropped=dropped, previous=previous)
    x_values, r_values = {}, {}
    for name, v in values.items():
        if isinstance(model.layers[name], Constant):
            x_values[name] = r_values[name] = v
        else:
            x_values[name], r_values[name] = v[:n], v[n:]
    return x_values, r_values


def backward(model: Model, state: PassState, target: str, seeds: Tensor,
             score_layers: Sequence[str], node_errors: dict[str, float] | None = None,
             release: bool = False, release_values: bool = False) -> dict[str, Multipliers]:
    """Propagate ``seeds`` (T, P, *target_shape) from ``target`` to the ``score_layers``.

    Returns the multipliers ``(m⁺, m⁻)`` (``m⁻`` None when equal to ``m⁺``) of every score layer.
    With ``node_errors``, each layer's own conservation error is recorded there (see
    :func:`node_conservation_error`), the largest seen per layer. With ``release``, each layer's
    values leave the state once its backward is done (the last backward of a pass; the target
    and the score layers stay); with ``release_values`` (a backward that later ones over the same
    state follow), the values no later backward reads (``Layer.rereads_values``) leave, the
    rule state stays.
    """
    relevant = model.ancestors([target]) & model.descendants(score_layers)
    state.final_backward = release
    # (not when the node table reads splits after the backward)
    state.hand_over = release and node_errors is None
    state.keep = frozenset(score_layers) | {target}
    mults: dict[str, Multipliers] = {target: (seeds, None)}
    wanted = set(score_layers)
    owned: set[str] = set()  # layers whose multipliers in ``mults`` are the engine's own tensors
    out: dict[str, Multipliers] = {}
    for name in reversed(model.layer_names):
        if name not in mults:
            continue
        m_pos, m_neg = mults.pop(name)
        if name in wanted:
            out[name] = (m_pos, m_neg)
            if not (model.ancestors([name]) - {name}) & relevant:
                continue
        layer = model.layers[name]
        if isinstance(layer, (Input, Constant)):
            continue
        # (not when the node table reads the layer's incoming multipliers after its backward)
        state.owns_incoming = name in owned and name not in wanted and node_errors is None
        state.running = name
        leaves = name != target and name not in wanted and (release or (
            release_values and node_errors is None and not any(
                model.layers[n].rereads_values(state) for n in (name, *model.consumers(name)))))
        if leaves and node_errors is None:  # nothing reads its values after: it may compute in them
            state._losing.add(name)
        grads = layer.backward(state, m_pos, m_neg)
        state._losing.discard(name)
        state.running = None
        if node_errors is not None:
            error = node_conservation_error(model, state, name, (m_pos, m_neg), grads)
            node_errors[name] = max(node_errors.get(name, 0.0), error)
        fresh = _fresh_flags(layer, grads, None if state.owns_incoming else (m_pos, m_neg))
        for inp, g, g_fresh in zip(layer.inputs, grads, fresh):
            if inp in relevant and not isinstance(model.layers[inp], Constant):
                if inp in mults:
                    mults[inp] = _accumulate(mults[inp], inp in owned, g, g_fresh)
                    owned.add(inp)
                else:
                    mults[inp] = g
                    if g_fresh:
                        owned.add(inp)
        del grads, m_pos, m_neg
        if not leaves:
            continue
        if release:
            state.release(name)
        else:
            state.release_values(name)  # later passes read only the rule state it cached
    for name in score_layers:
        if name not in out:  # the target does not depend on this layer
            shape, dtype, device = state.pair_shape(name, seeds.shape[1])
            out[name] = (torch.zeros((seeds.shape[0], *shape), dtype=dtype, device=device), None)
    return out


def node_conservation_error(model: Model, state: PassState, name: str, m_out: Multipliers,
                            m_in: list[Multipliers]) -> float:
    """How far one layer's backward breaks summation-to-delta on its own: the largest, over
    targets and pairs, of |Σ m_out·Δy − Σ_inputs Σ m_in·Δx| / (1 + |Σ m_out·Δy|). Float rounding
    for every exact rule; a layer whose rule leaks shows its size here."""
    out_total = contributions(state, name, m_out).flatten(2).sum(2)
    in_total = torch.zeros_like(out_total)
    for inp, g in zip(model.layers[name].inputs, m_in):
        if not state.is_constant(inp):
            in_total = in_total + contributions(state, inp, g).flatten(2).sum(2)
    return float(((out_total - in_total).abs() / (1 + out_total.abs())).max())


def contributions(state: PassState, name: str, m: Multipliers) -> Tensor:
    """``m⁺·Δ⁺ + m⁻·Δ⁻`` of a layer, shape (T, P, ...)."""
    m_pos, m_neg = m
    if m_neg is None:
        return m_pos * state.delta(name)
    p, n = state.split(name)
    return m_pos * p + m_neg * n


# ---------------------------------------------------------------------------------------------
# targets and batches of (example, reference) pairs


@dataclass
class TargetSpec:
    """The target layer, the unit indices scored (flattened per example), whether one int was
    asked for (no target axis in the output), and whether softmax logits are mean-centred.
    ``per_example``: one unit per example instead (``indices`` is then ``[0]``, one target)."""

    layer: str
    indices: list[int]
    single: bool
    centre: bool
    n_features: int
    per_example: list[int] | None = None


def target_seeds(spec: TargetSpec, ex: Tensor, shape: tuple, dtype, device) -> Tensor:
    """(T, P, *shape) for the pairs whose examples are ``ex``: one-hot per target (minus 1/K
    when softmax logits are mean-centred)."""
    n_pairs = len(ex)
    if spec.per_example is not None:
        units = torch.tensor(spec.per_example, device=device)[ex.to(device)]
        eye = torch.zeros((1, n_pairs, spec.n_features), dtype=dtype, device=device)
        eye[0, torch.arange(n_pairs, device=device), units] = 1
        if spec.centre:
            eye = eye - 1.0 / spec.n_features
        return eye.reshape(1, n_pairs, *shape)
    eye = torch.zeros((len(spec.indices), spec.n_features), dtype=dtype, device=device)
    eye[torch.arange(len(spec.indices), device=device), torch.tensor(spec.indices, device=device)] = 1
    if spec.centre:
        eye = eye - 1.0 / spec.n_features
    return eye.reshape(len(spec.indices), 1, *shape).expand(len(spec.indices), n_pairs, *shape)


def _cat_multipliers(parts: list) -> tuple:
    """Join (m⁺, m⁻) pairs computed for consecutive groups of targets along the target axis."""
    pos = torch.cat([p for p, _ in parts])
    if all(n is None for _, n in parts):
        return pos, None
    return pos, torch.cat([p if n is None else n for p, n in parts])


#: layers whose output is an affine function of their input (with a backward that reads no
#: values): integrated gradients' linear stem (``PairRunner._linear_stem``)
_AFFINE = (SignSplitLinear, SignedScale, SignPreservingLinear)


#: on CPU, the largest tensor (one layer, all rows of a batch or all targets of a backward pass)
#: a pass aims for. glibc's malloc maps blocks above its mmap threshold (32 MB at most) fresh from
#: the operating system at every allocation, and page-faulting them in costs more than the
#: arithmetic: ``benchmarks/bench_pass_size.py`` measured 10 shuffled references for 64 sequences
#: of the BPNet-like model (``batch_size=640``) at 13.5x one gradient with this cap, 17.5x at
#: 64 MB and 33.7x without; all 10 classes of the image CNN at 5.7x / 6.1x / 5.9x (there the
#: smaller passes save memory, not time)
PASS_BYTES = 16 << 20
#: elements per block of equal runs of pairs of one example (on average) from which their
#: differences from their references are taken a block at a time rather than after a gather
#: (``PassState._x_runs``)
RUN_ELEMENTS = 1 << 16


class PairRunner:
    """Splits the (example, reference) pairs into batches and accumulates per-example means."""

    def __init__(self, model: Model, method: Method, spec: TargetSpec, score_names: list[str],
                 shapes: dict[str, tuple], rule_for, options: RuleOptions, hypothetical: bool,
                 return_delta: bool) -> None:
        self.model, self.method, self.spec = model, method, spec
        self.score_names, self.shapes = score_names, shapes
        self.rule_for, self.options = rule_for, options
        self.hypothetical, self.return_delta = hypothetical, return_delta
        # summation-to-delta is checked on every run of a DeepLIFT method scored at the inputs
        self.check_delta = method.sums_to_delta and set(score_names) == set(model.input_names)
        self.worst_delta: WorstError | None = None  # the largest error in units of rounding
        self.needed = [spec.layer, *score_names]
        #: set to a dict to collect every layer's own conservation error (DeepLIFT methods)
        self.node_errors: dict[str, float] | None = None
        #: the last forward's values, kept for the next forward to take over (``_hand_over``)
        self._previous: dict[str, Tensor] | None = None

    def run(self, xs: list[Tensor], refs: list[Tensor] | None, n_refs: int, batch_size: int,
            steps: int, progress: bool):
        batch_size = self._cpu_batch_cap(xs, batch_size)
        self.batch_size = batch_size
        self.keep = self._values_kept()
        n = xs[0].shape[0]
        t = len(self.spec.indices)
        dtype = self.model.dtype  # scores of integer token inputs are floating too

        def new_scores() -> list[Tensor]:
            return [torch.zeros((n, t, *self.shapes[s][1:]), dtype=dtype, device=xs[0].device)
                    for s in self.score_names]
        scores: list[Tensor] | None = None  # made after the first batch: not part of its peak
        deltas = torch.zeros((n, n_refs, t), dtype=dtype, device=xs[0].device)
        n_pairs = n * n_refs
        per_batch = self.method.pairs_per_batch(batch_size, steps, n_refs)
        batches = range(0, n_pairs, per_batch)
        self.shared_r_values = None
        if (refs is not None and self.method.uses_reference and all(r.shape[0] == 1 for r in refs)
                and n_refs <= batch_size):
            # one reference set for every example: run it forward once per call, not per batch
            with torch.no_grad():
                self.shared_r_values = self.model.forward_all([r[0] for r in refs], self.needed)
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, total=math.ceil(n_pairs / per_batch), unit="batch",
                           desc=f"deeplift {self.method.name}")
        try:
            with torch.no_grad():
                for start in batches:
                    end = min(start + per_batch, n_pairs)
                    pairs = torch.arange(start, end, device=xs[0].device)
                    ex, rf = pairs // n_refs, pairs % n_refs
                    batch_scores, batch_delta = self._batch(xs, refs, ex, rf, steps, end == n_pairs)
                    scores = new_scores() if scores is None else scores
                    for acc, s in zip(scores, batch_scores):
                        acc.index_add_(0, ex, s.transpose(0, 1), alpha=1 / n_refs)
                    if batch_delta is not None:
                        deltas[ex, rf] = batch_delta.transpose(0, 1)
        finally:
            self._previous = None
        return new_scores() if scores is None else scores, deltas

    def _handed_over(self) -> dict[str, Tensor] | None:
        """The last forward's values, for the next forward to drop layer by layer (and no longer
        held here)."""
        previous, self._previous = self._previous, None
        return previous

    def _hand_over(self, values: dict[str, Tensor], final: bool) -> None:
        """Keep the values of a forward's largest layers until the next forward of the call makes
        them again (``Model.forward_all``'s ``previous``), on CPU: the C library hands the top
        of its heap back to the system once a batch's backward has freed its values, and the next
        batch's forward maps it in afresh (10 shuffled references on a BPNet-like model in a
        fresh process: 3 GB per call, a fifth of its time; benchmarks/bench_methods.py). Kept,
        each value's memory goes to the next value of its size. The largest layers' values only:
        a backward's memory peaks at their backward, where they are alive anyway, and a smaller
        layer's value, released before that, would add to the peak. A GPU's caching allocator
        keeps freed blocks; there the backward reuses the values' blocks as they go."""
        if final or not values or next(iter(values.values())).device.type != "cpu":
            return
        layers = self.model.layers
        sizes = {name: v[0].numel() * v.element_size() for name, v in values.items()
                 if v.ndim and len(v) and not isinstance(layers[name], (Input, Constant))}
        largest = max(sizes.values(), default=0)
        self._previous = {name: values[name] for name, size in sizes.items() if size == largest}

    def _values_kept(self) -> set[str] | None:
        """The values a pass keeps from its forward: the target's, the score layers', the
        constants' and those its backward reads (``Layer.pass_reads``); None (all) where a layer
        does not say, or the node table reads every layer after the backward."""
        model = self.model
        if self.node_errors is not None:
            return None
        reference = self.method.uses_reference
        keep = set(self.needed) | {n for n, layer in model.layers.items() if isinstance(layer, Constant)}
        relevant = model.ancestors([self.spec.layer]) & model.descendants(self.score_names)
        paired = self._paired(relevant) if reference else {}
        splits: set[str] = {n for n in self.score_names if paired.get(n)}  # contributions m±·Δ±
        for name in relevant:
            layer = model.layers[name]
            if not isinstance(layer, (Input, Constant)):
                reads = layer.pass_reads(self.rule_for(layer), reference, paired.get(name, False))
                if reads is None:
                    return None
                keep.update(reads)
                splits.update(layer.splits_read(self.rule_for(layer)) if reference else ())
        done: set[str] = set()
        while splits:  # what computing the splits asked for reads, down to the inputs
            name = splits.pop()
            done.add(name)
            layer = model.layers[name]
            reads = layer.split_reads(self.rule_for(layer)) if not isinstance(layer, Constant) else ((), ())
            if reads is None:
                return None
            keep.update(reads[0])
            splits.update(set(reads[1]) - done)
        return keep

    def _paired(self, relevant: set[str]) -> dict[str, bool]:
        """Which layers receive two multipliers (m⁺ ≠ m⁻) in a DeepLIFT pass: those below a
        RevealCancel nonlinearity, down to the next weighted linear layer, which joins them."""
        paired: dict[str, bool] = {}
        for name in reversed(self.model.layer_names):
            if name not in relevant:
                continue
            layer = self.model.layers[name]
            if isinstance(layer, Activation):
                out = paired.get(name, False) or self.rule_for(layer) == "reveal_cancel"
            elif isinstance(layer, SignSplitLinear):
                out = False
            else:
                out = paired.get(name, False)
            for i in layer.inputs:
                paired[i] = paired.get(i, False) or out
        return paired

    def _cpu_batch_cap(self, xs: list[Tensor], batch_size: int) -> int:
        """On CPU, at most as many rows per batch as keep the largest layer's tensor within
        ``PASS_BYTES``: smaller batches of the same pairs give the same scores, and larger
        ones page-fault every activation in afresh (see ``PASS_BYTES``)."""
        if xs[0].device.type != "cpu":
            return batch_size
        shapes = self.model.layer_shapes(xs, self.model.layer_names)
        itemsize = self.model.dtype.itemsize
        largest = max((math.prod(s[1:]) for n, s in shapes.items()
                       if not isinstance(self.model.layers[n], Constant)), default=1) * itemsize
        return max(1, min(batch_size, PASS_BYTES // max(largest, 1)))

    # -- one batch ------------------------------------------------------------------------------
    def _batch(self, xs, refs, ex: Tensor, rf: Tensor, steps: int, final: bool = True):
        if self.method.integrated:
            return self._integrated_gradients(xs, refs, ex, rf, steps, final)
        uniq_ex, x_idx = torch.unique(ex, return_inverse=True)
        first, last = int(uniq_ex[0]), int(uniq_ex[-1])
        if last - first + 1 == len(uniq_ex):  # consecutive examples: a view, not a copy
            x_batch = [x[first:last + 1] for x in xs]
        else:
            x_batch = [x.index_select(0, uniq_ex) for x in xs]
        memos: dict[str, object] = {}  # this batch's own: the model is shared between threads
        if not self.method.uses_reference:
            dropped: dict[str, tuple] = {}
            with torch.no_grad():
                x_values = self.model.forward_all(x_batch, self.needed, memos, keep=self.keep,
                                                  dropped=dropped, previous=self._handed_over())
            self._hand_over(x_values, final)
            state = PassState(self.model, x_values, None, x_idx, None, self.rule_for, self.options,
                              memos, dropped)
            ms = self._backward(state, ex)
            out = []
            for name, (mp, mn) in zip(self.score_names, ms):
                mult = mp if mn is None else 0.5 * (mp + mn)
                out.append(self.method.from_multipliers(mult, state.x(name)))
            return out, None
        dropped = {}
        if self.shared_r_values is not None:
            with torch.no_grad():
                x_values = self.model.forward_all(x_batch, self.needed, memos, keep=self.keep,
                                                  dropped=dropped, previous=self._handed_over())
            r_values, r_idx = self.shared_r_values, rf
        else:
            r_rows, r_idx = self._reference_rows(refs, ex, rf)
            x_values, r_values = forward_together(self.model, x_batch, r_rows, self.needed, memos,
                                                  keep=self.keep, dropped=dropped,
                                                  previous=self._handed_over())
        self._hand_over(x_values, final)
        state = PassState(self.model, x_values, r_values, x_idx, r_idx, self.rule_for, self.options,
                          memos, dropped)
        state.owns_values = (True, self.shared_r_values is None)
        ms = self._backward(state, ex)
        out = []
        for name, m in zip(self.score_names, ms):
            if self.hypothetical:
                out.append(self._hypothetical(m, state.r(name)))
            else:
                out.append(contributions(state, name, m))
        delta = None
        if self.return_delta or self.check_delta:
            contribs = out if not self.hypothetical else [
                contributions(state, n, m) for n, m in zip(self.score_names, ms)]
            delta, target_delta, magnitude = self._delta_error(state, contribs, ex)
            self._note_worst(delta, target_delta, magnitude, ex, rf)
        return out, delta

    def _note_worst(self, delta: Tensor, target_delta: Tensor, magnitude: Tensor, ex: Tensor,
                    rf: Tensor) -> None:
        """Keep the summation-to-delta error (T, P) that is the largest multiple of rounding."""
        worst = worst_of(delta, target_delta, magnitude, delta.dtype, ex, rf, self.spec.indices)
        if self.worst_delta is None or worst.ratio > self.worst_delta.ratio:
            self.worst_delta = worst

    def _reference_rows(self, refs: list[Tensor], ex: Tensor, rf: Tensor):
        """Distinct reference rows of this batch and each pair's index into them."""
        if refs[0].shape[0] == 1 and all(r.shape[0] == 1 for r in refs):
            uniq, r_idx = torch.unique(rf, return_inverse=True)
            return [r[0].index_select(0, uniq) for r in refs], r_idx
        rows = [r[ex if r.shape[0] > 1 else torch.zeros_like(ex), rf] for r in refs]
        return rows, None

    def _backward(self, state: PassState, ex: Tensor, score_names: list[str] | None = None):
        """Multipliers of every score layer for all targets: the targets' seeds are stacked and go
        back together, in passes whose multipliers in and out of a layer stay within
        ``PASS_BYTES`` (and 16 × batch_size rows): one pass for one target; for every class of a
        classifier, a few. Rule state (e.g. Rescale factors) is computed once and shared by the
        passes."""
        score_names = self.score_names if score_names is None else score_names
        shape = self.shapes[self.spec.layer][1:]
        seeds = target_seeds(self.spec, ex, shape, state.x(self.spec.layer).dtype,
                             state.x(self.spec.layer).device)
        per_pass = max(1, (16 * self.batch_size) // len(ex))
        if seeds.device.type == "cpu":
            # a backward step holds the multipliers it gets and those it returns, both up to the
            # widest layer's size: the two together within PASS_BYTES
            largest = max((v[0].numel() * v.element_size() for name, v in state.x_values.items()
                           if v.ndim > 0 and len(v) and not state.is_constant(name)), default=1)
            per_pass = max(1, min(per_pass, PASS_BYTES // (2 * largest * len(ex))))
        starts = range(0, seeds.shape[0], per_pass)
        chunks = [backward(self.model, state, self.spec.layer, seeds[t:t + per_pass],
                           score_names, self.node_errors, release=t == starts[-1],
                           release_values=t != starts[-1])
                  for t in starts]
        if len(chunks) == 1:
            return [chunks[0][n] for n in score_names]
        return [_cat_multipliers([c[n] for c in chunks]) for n in score_names]

    def _linear_stem(self) -> str | None:
        """The last layer of a chain of affine layers (dense, convolution, batch norm, scaling,
        pooling averages, reshapes...) that starts at the (single) score layer and carries all of
        its gradient, or None. The chain's outputs along an integration path are the
        interpolation of its outputs for the example and the reference, and its transposed ops
        are the same at every point, so integrated gradients interpolates at its end, sums the
        multipliers over the steps there and runs the chain backward once per pair instead of
        forward and backward once per step (the first convolution is a large part of the work)."""
        if len(self.score_names) != 1 or len(self.model.input_names) != 1:
            return None  # other inputs (e.g. additional_forward_args) go through the whole path
        upstream = self.model.ancestors([self.spec.layer])
        name, stem = self.score_names[0], None
        while True:
            consumers = [c for c in self.model.consumers(name) if c in upstream]
            if len(consumers) != 1 or consumers[0] == self.spec.layer:
                return stem
            layer = self.model.layers[consumers[0]]
            if not isinstance(layer, _AFFINE) or len(layer.inputs) != 1:
                return stem
            name = stem = consumers[0]

    def _hypothetical(self, m, ref: Tensor) -> Tensor:
        mp, mn = m
        mult = mp if mn is None else 0.5 * (mp + mn)
        axis = one_hot_axis(ref) + 1  # multipliers carry a leading target axis
        return hypothetical_contributions(mult, ref, channel_axis=axis)

    def _delta_error(self, state: PassState, contribs: list[Tensor], ex: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
        """(Σ contributions − seed·Δtarget, seed·Δtarget, the magnitude rounding acts on:
        Σ|contributions| + |seed|·(|target(x)| + |target(r)|)), per (target, pair)."""
        total = sum(c.flatten(2).sum(2) for c in contribs)
        d_target = state.delta(self.spec.layer).reshape(-1, self.spec.n_features)  # (P, K); also for (P,) outputs
        seeds = target_seeds(self.spec, ex, (self.spec.n_features,), d_target.dtype, d_target.device)
        target_delta = (seeds * d_target).sum(-1)
        size = (state.x(self.spec.layer).abs() + state.r(self.spec.layer).abs()).reshape(d_target.shape)
        magnitude = (sum(torch.linalg.vector_norm(c.flatten(2), 1, dim=2) for c in contribs)
                     + (seeds.abs() * size).sum(-1))  # (Σ|c| without a |c| tensor)
        return total - target_delta, target_delta, magnitude

    def _integrated_gradients(self, xs, refs, ex: Tensor, rf: Tensor, steps: int, final: bool):
        """Midpoint Riemann sum of the gradient along the straight path from each pair's reference
        to its example. The interpolation points of every pair go forward and backward together,
        ``batch_size`` points at a time (whole chunks of steps), so memory is bounded by
        ``batch_size`` whatever ``steps`` is; the sum accumulates over the chunks (at the end of
        the linear stem, if the model starts with one: see ``_linear_stem``)."""
        n_pairs = len(ex)
        rows = self._reference_rows(refs, ex, rf)
        r_pairs = rows[0] if rows[1] is None else [r.index_select(0, rows[1]) for r in rows[0]]
        x_pairs = [x.index_select(0, ex) for x in xs]
        diffs = [x - r for x, r in zip(x_pairs, r_pairs)]
        stem = self._linear_stem()
        if stem is None:
            path_start, path_diff = r_pairs, diffs
        else:  # the stem is affine: interpolate its outputs for x and r instead of running it
            s_x = self.model.forward_all(x_pairs, [stem])[stem]
            s_r = self.model.forward_all(r_pairs, [stem])[stem]
            path_start, path_diff = [s_r], [s_x - s_r]
        sum_at = self.score_names if stem is None else [stem]
        per_chunk = max(1, self.batch_size // n_pairs)  # steps per forward pass
        grad_sums: list[Tensor | None] = [None] * len(sum_at)
        for first in range(0, steps, per_chunk):
            k = min(per_chunk, steps - first)
            alphas = (torch.arange(first, first + k, dtype=xs[0].dtype, device=xs[0].device) + 0.5) / steps
            points = []
            for d, r in zip(path_diff, path_start):
                a = alphas.reshape(k, 1, *([1] * (d.ndim - 1)))
                points.append(torch.addcmul(r.unsqueeze(0), a, d.unsqueeze(0)).reshape(k * n_pairs, *d.shape[1:]))
            memos: dict[str, object] = {}
            dropped: dict[str, tuple] = {}
            if stem is None:
                values = self.model.forward_all(points, self.needed, memos, keep=self.keep,
                                                dropped=dropped, previous=self._handed_over())
            else:  # the inputs' rows only give the stem's layers their shapes
                values = self.model.forward_all(x_pairs, self.needed, memos, given={stem: points[0]},
                                                keep=self.keep, dropped=dropped,
                                                previous=self._handed_over())
            self._hand_over(values, final and first + per_chunk >= steps)
            state = PassState(self.model, values, None, None, None, self.rule_for, self.options, memos,
                              dropped)
            for i, (mp, _) in enumerate(self._backward(state, ex.repeat(k), sum_at)):
                chunk_sum = mp.reshape(mp.shape[0], k, n_pairs, *mp.shape[2:]).sum(1)
                grad_sums[i] = chunk_sum if grad_sums[i] is None else grad_sums[i].add_(chunk_sum)
            del state, points
        if stem is not None:  # the stem's transposed ops read only layer shapes from the state
            state = PassState(self.model, values, None, None, None, self.rule_for, self.options,
                              released=dropped)
            m = backward(self.model, state, stem, grad_sums[0], self.score_names)
            grad_sums = [m[n][0] for n in self.score_names]
        del values
        # (the sums are ours to scale in place, except where the stem's transposes returned
        # views, such as a global average pool's expanded multipliers)
        out = [g.mul_(d / steps) if stem is None else g * (d / steps) for g, d in zip(grad_sums, diffs)]
        delta = None
        if self.return_delta:
            x_values, r_values = forward_together(self.model, x_pairs, r_pairs, [self.spec.layer])
            fx = x_values[self.spec.layer].reshape(n_pairs, -1)
            fr = r_values[self.spec.layer].reshape(n_pairs, -1)
            seeds = target_seeds(self.spec, ex, (self.spec.n_features,), fx.dtype, fx.device)
            total = sum(c.flatten(2).sum(2) for c in out)
            delta = total - (seeds * (fx - fr)).sum(-1)
        return out, delta
