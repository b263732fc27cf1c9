"""One batched pass: forward on inputs and references together, then the multipliers backward.

The forward runs once over ``cat([X, R])`` where ``X`` holds the distinct examples of the batch and
``R`` the distinct references; a pair ``p`` is (example ``x_idx[p]``, reference ``r_idx[p]``), so
an example scored against many references, or many examples against one shared reference set, are
each run forward once (``api.py`` runs a shared set once per call and passes its values in). The
backward runs over the pairs only, for all targets at once (a leading target axis on every
multiplier tensor). Shared references stay one row wherever a rule can broadcast them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .graph import Model
from .layers.base import Constant, Input, Layer, Multipliers, Split


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
    """

    near_zero: float = 1e-7
    max_routing: str = "conserving"
    original_quirks: bool = False


class PassState:
    """Everything the layers' rules read during a pass, computed lazily and cached."""

    def __init__(self, model: Model, x_values: dict[str, Tensor], r_values: dict[str, Tensor] | None,
                 x_idx: Tensor | None, r_idx: Tensor | None, rule_for: Callable[[Layer], str],
                 options: RuleOptions) -> None:
        self.model = model
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
            else:
                self._delta[name] = self.x(name) - self.r(name)
        return self._delta[name]

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

    def is_constant(self, name: str) -> bool:
        return isinstance(self.model.layers[name], Constant)

    def pair_shape(self, name: str, batch: int) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
        """Shape, dtype and device of a layer's per-pair output with the batch axis set to ``batch``."""
        v = self.x_values[name]
        return (batch, *v.shape[1:]), v.dtype, v.device

    def rule(self, layer: Layer) -> str:
        return self._rule_for(layer)

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


def _add(a: Multipliers | None, b: Multipliers) -> Multipliers:
    if a is None:
        return b
    (ap, an), (bp, bn) = a, b
    if an is None and bn is None:
        return ap + bp, None
    return ap + bp, (ap if an is None else an) + (bp if bn is None else bn)


def forward_together(model: Model, xs: Sequence[Tensor], rs: Sequence[Tensor], needed: Iterable[str]
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One forward over ``cat([x, r])``; returns the x and r halves of every value (views)."""
    n = xs[0].shape[0]
    values = model.forward_all([torch.cat([x, r]) for x, r in zip(xs, rs)], needed)
    x_values, r_values = {}, {}
    for name, v in values.items():
        if isinstance(model.layers[name], Constant):
            x_values[name] = r_values[name] = v
        else:
            x_values[name], r_values[name] = v[:n], v[n:]
    return x_values, r_values


def backward(model: Model, state: PassState, target: str, seeds: Tensor,
             score_layers: Sequence[str]) -> dict[str, Multipliers]:
    """Propagate ``seeds`` (T, P, *target_shape) from ``target`` to the ``score_layers``.

    Returns the multipliers ``(m⁺, m⁻)`` (``m⁻`` None when equal to ``m⁺``) of every score layer.
    """
    relevant = model.ancestors([target]) & model.descendants(score_layers)
    mults: dict[str, Multipliers] = {target: (seeds, None)}
    wanted = set(score_layers)
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
        grads = layer.backward(state, m_pos, m_neg)
        for inp, g in zip(layer.inputs, grads):
            if inp in relevant and not isinstance(model.layers[inp], Constant):
                mults[inp] = _add(mults.get(inp), g)
    for name in score_layers:
        if name not in out:  # the target does not depend on this layer
            shape, dtype, device = state.pair_shape(name, seeds.shape[1])
            out[name] = (torch.zeros((seeds.shape[0], *shape), dtype=dtype, device=device), None)
    return out


def contributions(state: PassState, name: str, m: Multipliers) -> Tensor:
    """``m⁺·Δ⁺ + m⁻·Δ⁻`` of a layer, shape (T, P, ...)."""
    m_pos, m_neg = m
    if m_neg is None:
        return m_pos * state.delta(name)
    p, n = state.split(name)
    return m_pos * p + m_neg * n
