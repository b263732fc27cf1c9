"""Max pooling and max reductions (global max pooling).

A window's output difference is ``Δy = x_i − r_j`` where ``i`` is the argmax of the input window
and ``j`` the argmax of the reference window. Since ``r_i ≤ r_j`` and ``x_j ≤ x_i``,
``Δx_j ≤ Δy ≤ Δx_i``, so ``Δy = λ·Δx_i + (1−λ)·Δx_j`` with
``λ = (x_i − x_j) / ((x_i − x_j) + (r_j − r_i))`` in [0, 1]. The "conserving" rule routes the
window's multiplier to ``i`` and ``j`` with weights λ and 1−λ: summation-to-delta holds for any
reference, and when both argmaxes agree it is the gradient. The original library's rule
(``max_routing="gradient"``, and every gradient method) sends everything to ``i``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Layer, Multipliers, Split, State, flat_targets, unflat_targets
from .linear import _tuple, pad_pairs, torch_pad_arg

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class _MaxRouting(Layer):
    """Shared rule: per output, a (weight, index) pair for the input argmax and the reference
    argmax within a flattened view ``(B, C, S)`` of the input."""

    #: its backward returns tensors it allocated (the engine may accumulate into them)
    fresh_multipliers = True

    def flat_view(self, t: Tensor) -> Tensor:
        """Input-shaped tensor -> (B, C, S) view over which indices are taken."""
        raise NotImplementedError

    def flat_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        raise NotImplementedError

    def max_with_indices(self, flat: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(values, indices), both (B, C, O), for the flat view ``flat`` of input tensor ``t``."""
        raise NotImplementedError

    def unflat_grad(self, g: Tensor, input_shape: Sequence[int]) -> Tensor:
        """(B, C, S) gradient in the flat view -> input-shaped."""
        raise NotImplementedError

    def output_shape_of(self, out_flat: Tensor, state) -> Tensor:
        shape, _, _ = state.pair_shape(self.name, out_flat.shape[0])
        return out_flat.reshape(shape)

    def _ties_share(self, state) -> bool:
        return False

    @staticmethod
    def _conserving(state) -> bool:
        return state.difference_based and state.options.max_routing == "conserving"

    # The forward pass finds the argmax anyway; the engine keeps it with the pass (never on the
    # layer, which concurrent calls share) and the routing reuses it instead of pooling again.
    def _remembered_indices(self, state) -> Tensor | None:
        """Argmax indices (B, C, O) of the forward pass over this pass's examples, if it kept them."""
        return state.forward_memo(self.name)

    def _routing(self, state):
        """(i, j, λ): flat indices of the input and reference argmax, and i's weight (B, C, O)."""
        def compute():
            inp = self.inputs[0]
            x = state.x(inp)
            xf = self.flat_view(x)
            i = self._remembered_indices(state)
            if i is None:
                xi, i = self.max_with_indices(xf, x)
            else:
                i = state.select_x_rows(i).long()  # (gather and scatter take int64)
                xi = state.x(self.name).reshape(i.shape)
            if not self._conserving(state):
                return i, None, None
            r = state.r_broadcast(inp)  # one row when every pair shares the reference
            rf = self.flat_view(r)
            rj, j = self.max_with_indices(rf, r)
            if rf.shape[0] != xf.shape[0]:
                if self._windows_constant(r, rj):
                    # every window of the shared reference holds one value (a constant
                    # reference, or one constant per channel after a convolution): the reference
                    # is at its maximum wherever the input's argmax is, λ = 1 (below), found
                    # on the reference's row alone instead of gathering it for every pair
                    return i, None, None
                rf, rj, j = (t.expand(xf.shape[0], *t.shape[1:]) for t in (rf, rj, j))
            gap_r = rj - rf.gather(2, i)
            if not gap_r.any():
                # the reference is at its window's maximum wherever the input's argmax is (a
                # constant reference, or argmaxes that agree): λ = 1 everywhere, the gradient's
                # routing, without gathering and scattering a second share of zeros
                return i, None, None
            gap_x = xi - xf.gather(2, j)
            # λ = gap_x / (gap_x + gap_r); both gaps are 0 only when i is the reference's argmax too
            lam = (gap_x / (gap_x + gap_r)).nan_to_num_(nan=1.0)
            return i, j, lam
        return state.cached(self, "routing", compute)

    def _windows_constant(self, r: Tensor, r_max: Tensor) -> bool:
        """Whether every window's minimum over ``r`` equals its maximum ``r_max`` (padding, which
        ``flat_view`` fills with −∞, takes part in neither)."""
        r_min = self.max_with_indices(self.flat_view(-r), -r)[0].neg_()
        return torch.equal(r_min, r_max)

    def _route_forward(self, state, v: Tensor) -> Tensor:
        """Apply the routing weights to an input-shaped per-pair tensor (for the split)."""
        i, j, lam = self._routing(state)
        vf = self.flat_view(v)
        out = vf.gather(2, i)
        if j is not None:
            out = lam * out + (1 - lam) * vf.gather(2, j)
        return self.output_shape_of(out, state)

    def _route_backward(self, state, m: Tensor) -> Tensor:
        """(T, P, *out) multipliers -> (T, P, *in)."""
        i, j, lam = self._routing(state)
        t = m.shape[0]
        in_shape, _, _ = state.pair_shape(self.inputs[0], m.shape[1])
        mf = m.reshape(t, i.shape[0], i.shape[1], -1)
        if j is None and not self._conserving(state) and self._ties_share(state):
            return self._ties_backward(state, m)
        g = torch.zeros((t, *self.flat_shape(in_shape)), dtype=m.dtype, device=m.device)
        if j is None:
            g.scatter_add_(3, i.expand(t, *i.shape), mf)
        else:
            to_i = lam * mf
            g.scatter_add_(3, i.expand(t, *i.shape), to_i)
            # the rest of each window's multiplier (m − λm: one temporary, and the two parts sum
            # to m to within one rounding)
            g.scatter_add_(3, j.expand(t, *j.shape), to_i.neg_().add_(mf))
        return unflat_targets(self.unflat_grad(flat_targets(g), (t * in_shape[0], *in_shape[1:])), t)

    def split(self, state: State) -> Split:
        p, n = state.split(self.inputs[0])
        return self._route_forward(state, p), self._route_forward(state, n)

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        return (*self.inputs, self.name)  # the routing: argmaxes of the input, its own output

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return (*self.inputs, self.name), tuple(self.inputs)

    def rereads_values(self, state: State) -> bool:
        return not self._conserving(state) and self._ties_share(state)  # else the routing is cached

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return [(self._route_backward(state, m_pos),
                 None if m_neg is None else self._route_backward(state, m_neg))]


class MaxPool(_MaxRouting):
    """N-d max pooling, channels first; ``padding`` may be uneven (before, after) pairs
    (padded positions never win, as in TF's "same" max pooling)."""

    def __init__(self, nd: int, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.nd = nd
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride = _tuple(stride if stride is not None else kernel_size, nd)
        self.dilation = _tuple(dilation, nd)
        self.ceil_mode = ceil_mode
        pairs = pad_pairs(padding, nd)
        self.pad = torch_pad_arg(pairs) if any(a or b for a, b in pairs) else None

    def _padded(self, x: Tensor) -> Tensor:
        return x if self.pad is None else F.pad(x, self.pad, value=-math.inf)

    def _crop(self, out: Tensor, spatial: Sequence[int]) -> Tensor:
        """Drop the extra last window that ``ceil_mode`` can add on an explicitly padded input:
        PyTorch keeps a window only if it starts inside the input or its leading padding."""
        if self.pad is None or not self.ceil_mode:
            return out
        index = [slice(None)] * 2
        for k, size in enumerate(spatial):
            before = self.pad[2 * (self.nd - 1 - k)]
            n = out.shape[2 + k]
            index.append(slice(0, n - 1 if (n - 1) * self.stride[k] >= size + before else n))
        return out[tuple(index)]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_memo(x)[0]

    def forward_with_memo(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The pooled output and its argmax indices in the flat view (B, C, O), kept as int32
        where they fit (half of int64's memory, held from the forward to this layer's backward)."""
        out, idx = _MAX_POOL[self.nd](self._padded(x), self.kernel_size, self.stride, 0, self.dilation,
                                      self.ceil_mode, return_indices=True)
        out, idx = self._crop(out, x.shape[2:]), self._crop(idx, x.shape[2:])
        if self.flat_shape(x.shape)[2] < 2 ** 31:
            idx = idx.to(torch.int32)
        return out, idx.reshape(idx.shape[0], idx.shape[1], -1)

    def flat_view(self, t: Tensor) -> Tensor:
        t = self._padded(t)
        return t.reshape(t.shape[0], t.shape[1], -1)

    def flat_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        spatial = [s + (0 if self.pad is None else self.pad[2 * k] + self.pad[2 * k + 1])
                   for k, s in enumerate(reversed(input_shape[2:]))]
        return input_shape[0], input_shape[1], math.prod(spatial)

    def max_with_indices(self, flat: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        out, idx = _MAX_POOL[self.nd](self._padded(t), self.kernel_size, self.stride, 0, self.dilation,
                                      self.ceil_mode, return_indices=True)
        out, idx = self._crop(out, t.shape[2:]), self._crop(idx, t.shape[2:])
        return out.reshape(out.shape[0], out.shape[1], -1), idx.reshape(idx.shape[0], idx.shape[1], -1)

    def unflat_grad(self, g: Tensor, input_shape: Sequence[int]) -> Tensor:
        if self.pad is None:
            return g.reshape(input_shape)
        padded = list(input_shape)
        for k in range(self.nd):
            padded[-1 - k] += self.pad[2 * k] + self.pad[2 * k + 1]
        g = g.reshape(padded)
        index = [slice(None)] * 2
        for k in reversed(range(self.nd)):
            index.append(slice(self.pad[2 * k], padded[-1 - k] - self.pad[2 * k + 1]))
        return g[tuple(index)]

    def describe(self) -> str:
        return f"MaxPool{self.nd}d({self.kernel_size})"


class MaxReduce(_MaxRouting):
    """Maximum over non-batch ``dims`` (global max pooling, ``torch.amax``)."""

    def __init__(self, dims: Sequence[int], keepdim: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(int(d) for d in dims)
        self.keepdim = keepdim

    def _dims(self, ndim: int) -> tuple[int, ...]:
        dims = tuple(sorted(d % ndim for d in self.dims))
        if 0 in dims:
            raise ValueError(f"layer {self.name!r}: a max over the batch axis is not supported")
        return dims

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(self._dims(x.ndim), keepdim=self.keepdim)

    def _perm(self, ndim: int) -> list[int]:
        dims = self._dims(ndim)
        return [d for d in range(ndim) if d not in dims] + list(dims)

    def flat_view(self, t: Tensor) -> Tensor:
        # flat_shape reads the reduced dims off the *unpermuted* shape
        return t.permute(self._perm(t.ndim)).reshape(self.flat_shape(t.shape))

    def flat_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        dims = self._dims(len(input_shape))
        kept = [s for d, s in enumerate(input_shape) if d not in dims]
        return kept[0], math.prod(kept[1:]), math.prod(input_shape[d] for d in dims)

    def max_with_indices(self, flat: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        out, idx = flat.max(dim=2, keepdim=True)
        return out, idx

    def unflat_grad(self, g: Tensor, input_shape: Sequence[int]) -> Tensor:
        perm = self._perm(len(input_shape))
        permuted = [input_shape[p] for p in perm]
        inverse = [perm.index(d) for d in range(len(perm))]
        return g.reshape(permuted).permute(inverse)

    def _ties_share(self, state) -> bool:
        return True

    def _ties_backward(self, state, m: Tensor) -> Tensor:
        """Gradient routing with ties: autograd's ``amax`` splits evenly between tied maxima; the
        original library gave every tied maximum the full multiplier."""
        inp = self.inputs[0]
        x = state.x(inp)
        dims = self._dims(x.ndim)
        top = x.amax(dims, keepdim=True)
        mask = (x == top).to(m.dtype)
        if not state.options.original_quirks:
            mask = mask / mask.sum(dims, keepdim=True)
        if not self.keepdim:
            for d in dims:
                m = m.unsqueeze(d + 1)
        return m * mask

    def describe(self) -> str:
        return f"Max{self.dims}"
