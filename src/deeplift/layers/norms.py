"""Normalisations by per-example statistics: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

(Batch norm in eval mode is a fixed affine map: :class:`~deeplift.layers.linear.BatchNorm`;
``deeplift.layers.normalization`` is the original library's module path, an alias.)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import PerPairLinearMap
from .linear import as_tensor


class Normalize(PerPairLinearMap):
    """``y = γ·c/σ + β`` with ``c = x − mean(x)`` (not centred for RMSNorm) and
    ``σ = sqrt(mean(c²) + eps)``, the statistics taken over ``dims`` of each example.

    ``dims`` are negative axes of the example (LayerNorm: the last ``len(normalized_shape)``;
    InstanceNorm: the spatial axes). With ``groups`` the example ``(C, *S)`` is first viewed as
    ``(groups, C/groups·∏S)`` and normalised over the last axis (GroupNorm). ``weight`` (γ) and
    ``bias`` (β) broadcast against the example's trailing axes.

    The rule is the exact decomposition into rules the engine already has: centring is linear
    (``Δc = PΔx``); ``Δ(c²) = (c + c_ref)·Δc`` (the Shapley product of ``c`` with itself); ``u =
    1/σ`` takes the Rescale factor ``s_u = Δu/Δv`` of ``v = mean(c²) + eps``; and ``c·u`` is split
    along one order of its two factors, ``Δ(c·u) = u_w·Δc + c_w·Δu`` with ``(u_w, c_w) =
    (u, c_ref)`` where ``u_ref ≥ u`` (u moves first) and ``(u_ref, c)`` otherwise. Per (example,
    reference) pair that is one linear map

        Δy = γ·[u_w·PΔx + 2·s_u·c_w·mean(c̄·PΔx)],   c̄ = (c + c_ref)/2

    which both parts of the split go through and whose transpose carries the multipliers. For
    gradient methods (``c_w = c̄ = c``, ``u_w = u``, ``s_u = −½σ⁻³``) it is the Jacobian.

    Why not the symmetric Shapley split ``ū·Δc + c̄·Δu``: at a reference whose σ is near
    ``sqrt(eps)`` (a constant or all-zero reference, the usual one) ``ū ≈ u_ref/2`` is huge and the
    two terms are huge and cancel: contributions of 3·10⁵ for a difference of 2 with eps = 1e-12,
    and 6% conservation error in float32. The order chosen here keeps every factor at most the
    smaller of ``u`` and ``u_ref`` (with an all-zero reference: ``Δy = γ·u·c``, the normalised
    input itself).
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
        """``(c̄, c_w, u_w, s_u, example_shape)`` per pair, in the grouped view: ``Δy = u_w·Δc +
        c_w·Δu`` and ``Δv = 2·mean(c̄·Δc)``."""
        def compute():
            x = state.x(self.inputs[0])
            shape = x.shape[1:]
            cx, vx = self._stats(self._group(x, x.ndim - 1))
            ux = torch.rsqrt(vx)
            if not state.difference_based:
                return cx, cx, ux, -0.5 * ux * ux * ux, shape
            cr, vr = self._stats(self._group(state.r(self.inputs[0]), x.ndim - 1))
            ur = torch.rsqrt(vr)
            dv = vx - vr
            near = dv.abs() < state.options.near_zero * vr
            s_u = torch.where(near, -0.5 * ur * ur * ur,
                              (ux - ur) / torch.where(near, torch.ones_like(dv), dv))
            # the order of the two factors: 1/σ moves first where it is the larger at the reference
            u_first = ur >= ux
            return (0.5 * (cx + cr), torch.where(u_first, cr, cx), torch.where(u_first, ux, ur), s_u,
                    shape)
        return state.cached(self, "factors", compute)

    def _apply(self, state, w: Tensor) -> Tensor:
        c_bar, c_w, u_w, s_u, shape = self._factors(state)
        d = self._dims()
        pw = self._centre(self._group(w, len(shape)))
        out = u_w * pw + (2 * s_u) * c_w * (c_bar * pw).mean(d, keepdim=True)
        out = self._ungroup(out, shape)
        return out * self.weight if self.weight is not None else out

    def _apply_transpose(self, state, m: Tensor) -> Tensor:
        c_bar, c_w, u_w, s_u, shape = self._factors(state)
        d = self._dims()
        if self.weight is not None:
            m = m * self.weight
        mg = self._group(m, len(shape))
        out = u_w * mg + (2 * s_u) * c_bar * (c_w * mg).mean(d, keepdim=True)
        return self._ungroup(self._centre(out), shape)


    def describe(self) -> str:
        kind = "RMSNorm" if not self.center else "GroupNorm" if self.groups else "Normalize"
        return f"{kind}(dims={list(self._dims())}{'' if self.groups is None else f', groups={self.groups}'})"


__all__ = ["Normalize"]
