"""Normalisations by per-example statistics: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

(Batch norm in eval mode is a fixed affine map: :class:`~deeplift.layers.linear.BatchNorm`;
``deeplift.layers.normalization`` is the original library's module path, an alias.)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import Layer, Multipliers, Split
from .linear import as_tensor


class Normalize(Layer):
    """``y = γ·c/σ + β`` with ``c = x − mean(x)`` (not centred for RMSNorm) and
    ``σ = sqrt(mean(c²) + eps)``, the statistics taken over ``dims`` of each example.

    ``dims`` are negative axes of the example (LayerNorm: the last ``len(normalized_shape)``;
    InstanceNorm: the spatial axes). With ``groups`` the example ``(C, *S)`` is first viewed as
    ``(groups, C/groups·∏S)`` and normalised over the last axis (GroupNorm). ``weight`` (γ) and
    ``bias`` (β) broadcast against the example's trailing axes.

    The rule is the exact decomposition into rules the engine already has: centring is linear
    (``Δc = PΔx``); ``Δ(c²) = (c + c_ref)·Δc`` (the Shapley product of ``c`` with itself); ``1/σ``
    takes the Rescale factor ``s_u = Δ(1/σ)/Δv`` of ``v = mean(c²) + eps``; and ``c·(1/σ)`` is
    split by the Shapley product rule. Per (example, reference) pair that is one linear map

        Δy = γ·[ū·PΔx + 2·s_u·c̄·mean(c̄·PΔx)],   c̄ = (c + c_ref)/2,  ū = (1/σ + 1/σ_ref)/2

    which both parts of the split go through and whose transpose carries the multipliers. For
    gradient methods (``c̄ = c``, ``ū = 1/σ``, ``s_u = −½σ⁻³``) it is the Jacobian.
    """

    def __init__(self, dims: Sequence[int] = (-1,), eps: float = 1e-5, weight=None, bias=None,
                 center: bool = True, groups: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(sorted(int(d) for d in dims))
        if any(d >= 0 for d in self.dims):
            raise ValueError(f"normalised axes {dims} must be negative (counted from the end)")
        self.eps = float(eps)
        self.weight = as_tensor(weight)
        self.bias = as_tensor(bias)
        self.center = bool(center)
        self.groups = None if groups is None else int(groups)

    # -- the grouped view ---------------------------------------------------------------------------
    def _group(self, t: Tensor, example_ndim: int) -> Tensor:
        if self.groups is None:
            return t
        return t.reshape(*t.shape[:t.ndim - example_ndim], self.groups, -1)

    def _ungroup(self, t: Tensor, example_shape: Sequence[int]) -> Tensor:
        if self.groups is None:
            return t
        return t.reshape(*t.shape[:t.ndim - 2], *example_shape)

    def _dims(self) -> tuple[int, ...]:
        return (-1,) if self.groups is not None else self.dims

    def _centre(self, t: Tensor) -> Tensor:
        return t - t.mean(self._dims(), keepdim=True) if self.center else t

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(c, v)`` of a (grouped) tensor: the centred values and ``mean(c²) + eps``."""
        c = self._centre(x)
        return c, (c * c).mean(self._dims(), keepdim=True) + self.eps

    def forward(self, x: Tensor) -> Tensor:
        c, v = self._stats(self._group(x, x.ndim - 1))
        y = self._ungroup(c * torch.rsqrt(v), x.shape[1:])
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    # -- the rule -------------------------------------------------------------------------------------
    def _factors(self, state):
        """``(c̄, ū, s_u, example_shape)`` per pair, in the grouped view."""
        def compute():
            x = state.x(self.inputs[0])
            shape = x.shape[1:]
            cx, vx = self._stats(self._group(x, x.ndim - 1))
            ux = torch.rsqrt(vx)
            if not state.difference_based:
                return cx, ux, -0.5 * ux * ux * ux, shape
            cr, vr = self._stats(self._group(state.r(self.inputs[0]), x.ndim - 1))
            ur = torch.rsqrt(vr)
            dv = vx - vr
            near = dv.abs() < state.options.near_zero * vr
            s_u = torch.where(near, -0.5 * ur * ur * ur,
                              (ux - ur) / torch.where(near, torch.ones_like(dv), dv))
            return 0.5 * (cx + cr), 0.5 * (ux + ur), s_u, shape
        return state.cached(self, "factors", compute)

    def _apply(self, state, w: Tensor) -> Tensor:
        c_bar, u_bar, s_u, shape = self._factors(state)
        d = self._dims()
        pw = self._centre(self._group(w, len(shape)))
        out = u_bar * pw + (2 * s_u) * c_bar * (c_bar * pw).mean(d, keepdim=True)
        out = self._ungroup(out, shape)
        return out * self.weight if self.weight is not None else out

    def _apply_transpose(self, state, m: Tensor) -> Tensor:
        c_bar, u_bar, s_u, shape = self._factors(state)
        d = self._dims()
        if self.weight is not None:
            m = m * self.weight
        mg = self._group(m, len(shape))
        out = u_bar * mg + (2 * s_u) * c_bar * (c_bar * mg).mean(d, keepdim=True)
        return self._ungroup(self._centre(out), shape)

    def split(self, state) -> Split:
        p, n = state.split(self.inputs[0])
        return self._apply(state, p), self._apply(state, n)

    def backward(self, state, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return [(self._apply_transpose(state, m_pos),
                 None if m_neg is None else self._apply_transpose(state, m_neg))]

    def describe(self) -> str:
        kind = "RMSNorm" if not self.center else "GroupNorm" if self.groups else "Normalize"
        return f"{kind}(dims={list(self._dims())}{'' if self.groups is None else f', groups={self.groups}'})"


__all__ = ["Normalize"]
