"""Elementwise nonlinearities and softmax, with every multiplier rule.

Which rule a nonlinearity uses is the method's choice (``methods.py``); how each rule computes
lives here. Rules for an elementwise ``y = f(x)`` with ``Δx = x − r``, ``Δy = f(x) − f(r)``:

* ``rescale``: ``s = Δy/Δx`` (``f'(r)`` where ``|Δx|`` is below ``near_zero``); both parts scaled.
* ``reveal_cancel``: with the input's split ``(Δx⁺, Δx⁻)``,
  ``Δy⁺ = ½[(f(r+Δx⁺) − f(r)) + (f(x) − f(r+Δx⁻))]``, ``Δy⁻ = ½[(f(r+Δx⁻) − f(r)) + (f(x) − f(r+Δx⁺))]``,
  ``m⁺_in = m⁺·Δy⁺/Δx⁺``, ``m⁻_in = m⁻·Δy⁻/Δx⁻`` (where ``|Δx⁺|`` is below ``near_zero``, the
  ratio's limit ``½[f'(r) + f'(r+Δx⁻)]``; likewise for ``Δx⁻``).
* ``gradient``: ``f'(x)``; ``guided_backprop``: ``f'(x)·[m⁺>0]``; ``guided_backprop_rescale``:
  the rescale factor with each part masked by its own sign; ``deconvnet``: ``f(m)``;
  ``pass_through``: ``m``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fusion import kernel, should_fuse
from ..rules import nonlinearity_rule, register_nonlinearity_rule
from .base import (Layer, Multipliers, PerPairLinearMap, Split, State, broadcast_shape, flat_targets,
                   piece, row_pieces, take, unflat_targets)
from .linear import as_tensor


class Near(NamedTuple):
    """Where a tensor is near zero: its boolean ``mask``, or, when few elements are, their
    positions in the flattened tensor alone (``flat``), found without a mask (see :func:`_below`)."""

    mask: Tensor | None
    flat: Tensor | None = None
    shape: tuple[int, ...] = ()  # of the tensor searched, with ``flat``

    def as_mask(self) -> Tensor:
        if self.mask is not None:
            return self.mask
        mask = torch.zeros(self.shape, dtype=torch.bool, device=self.flat.device)
        mask.view(-1)[self.flat] = True
        return mask


def _near_zero(t: Tensor, bound: float) -> Near | None:
    """Where ``|t| < bound``, or None when no element is that close to 0. The parts of a split
    are mostly of one sign: then one min/max pass decides, with no ``|t|`` tensor."""
    if t.numel() == 0:
        return None
    lo, hi = torch.aminmax(t)
    lo, hi = lo.item(), hi.item()
    if lo >= 0:
        return _below(t, bound, some=True) if lo < bound else None
    if hi <= 0:
        return _below(t, bound, some=True, negated=True) if hi > -bound else None
    return _below(t.abs(), bound)  # (both signs, or NaN)


#: the near-zero limits are computed at the masked elements alone when at most this fraction of
#: a tensor is masked (an index costs 8 bytes per dimension and element, a value 4)
_SPARSE_FRACTION = 1 / 16
#: elements per block of the search for a few near-zero elements (:func:`_below`)
_BLOCK = 1 << 12


def _below(t: Tensor, bound: float, some: bool = False, negated: bool = False) -> Near | None:
    """Where ``t < bound`` (``negated``: where ``t > −bound``), or None when nowhere (``some``:
    the caller knows an element is). A difference of exactly or nearly 0 is mostly a
    coincidence — a few elements per million, yet in most activation-sized tensors — so one read
    of ``t`` decides where to look: the minimum of each block of ``_BLOCK`` elements; only the
    few blocks holding one are searched, not the whole tensor compared and then indexed (three
    more passes over memory). A NaN (its block's minimum is NaN) is searched too, and is never
    below. When more than ``_SPARSE_FRACTION`` of the tensor may be, the mask is returned (the
    limits then go in everywhere: :func:`_put_where`); else the few elements' flat index."""
    n = t.numel()
    if n == 0:
        return None

    def below(v: Tensor) -> Tensor:
        return v > -bound if negated else v < bound
    flat = t.reshape(-1)
    blocks = n // _BLOCK
    if blocks < 2:  # a small tensor: the mask is cheap, its count decides
        mask = below(t)
        count = int(torch.count_nonzero(mask))
        if count == 0:
            return None
        if count > n * _SPARSE_FRACTION:
            return Near(mask)
        return Near(None, mask.reshape(-1).nonzero().squeeze(1), tuple(t.shape))
    head, tail = flat[: blocks * _BLOCK].view(blocks, _BLOCK), flat[blocks * _BLOCK:]
    extreme = head.amax(1).neg_() if negated else head.amin(1)
    hit = (~(extreme >= bound)).nonzero().squeeze(1)  # below, or NaN
    if (len(hit) + 1) * _BLOCK > n * _SPARSE_FRACTION:
        mask = below(t)
        return Near(mask) if some or bool(mask.any()) else None
    found = below(head[hit]).nonzero()
    index = torch.cat([hit[found[:, 0]] * _BLOCK + found[:, 1],
                       below(tail).nonzero().squeeze(1) + blocks * _BLOCK])
    return Near(None, index, tuple(t.shape)) if len(index) else None


def _put_where(out: Tensor, near: Near, dense: Callable[[], Tensor],
               at: "Callable[[tuple[Tensor, ...]], Tensor] | None") -> None:
    """``out = where(near, values, out)`` in place. ``dense()`` gives the values everywhere;
    ``at(index)`` (when given) at the few elements of a flat index only (see :func:`_below`):
    computing the limit over the whole tensor then a full ``where`` costs three passes over
    memory."""
    _values_where(near, dense, at, out.shape)(out)


def _values_where(near: Near, dense: Callable[[], Tensor],
                  at: "Callable[[tuple[Tensor, ...]], Tensor] | None", shape: Sequence[int]
                  ) -> Callable[[Tensor], object]:
    """:func:`_put_where`'s values computed now, put into a tensor of ``shape`` by the function
    returned: for a rule whose result overwrites what the values are computed from."""
    if at is not None and near.flat is not None and near.shape == tuple(shape):
        index = torch.unravel_index(near.flat, tuple(shape))
        values = at(index)
        return lambda out: out.index_put_(index, values.to(out.dtype))
    mask, values = near.as_mask(), dense()
    return lambda out: torch.where(mask, values, out, out=out)  # (a mask may broadcast)


def _at(t: Tensor, shape: Sequence[int], index: tuple[Tensor, ...]) -> Tensor:
    """The elements of ``t`` broadcast to ``shape`` at ``index`` (a ``nonzero`` index)."""
    return t.expand(shape)[index]


def _rescale_kernel(f, d, xi: Tensor, xo: Tensor, x_index: Tensor | None, ri: Tensor, ro: Tensor,
                    eps: float) -> Tensor:
    """The Rescale factor ``Δy/Δx`` (``f'(r)`` where ``|Δx| < eps``) in one fused loop; the
    example rows are gathered per pair by ``x_index`` (see ``State.x_rows``)."""
    dx = take(xi, x_index) - ri
    return torch.where(dx.abs() < eps, d(ri), (take(xo, x_index) - ro) / dx)


def _rescale_shape(xi: Tensor, xo: Tensor, x_index: Tensor | None, ri: Tensor, ro: Tensor,
                   eps: float) -> tuple[int, ...]:
    """The shape of the Rescale factor of these kernel arguments (per pair)."""
    rows = xi.shape if x_index is None else (len(x_index), *xi.shape[1:])
    return broadcast_shape(rows, ri.shape, ro.shape)


def _rescale_into_kernel(f, d, xi: Tensor, xo: Tensor, ri: Tensor, ro: Tensor, eps: float
                         ) -> Tensor:
    """:func:`_rescale_kernel` written into ``xo`` (each element reads its own before the write)."""
    return xo.copy_(_rescale_kernel(f, d, xi, xo, None, ri, ro, eps))


def _rescale_times_into_kernel(f, d, m: Tensor, xi: Tensor, xo: Tensor, x_index: Tensor | None,
                               ri: Tensor, ro: Tensor, eps: float) -> Tensor:
    """:func:`_rescale_times_kernel` written into ``m``."""
    return m.copy_(_rescale_times_kernel(f, d, m, xi, xo, x_index, ri, ro, eps))


def _rescale_times_kernel(f, d, m: Tensor, xi: Tensor, xo: Tensor, x_index: Tensor | None,
                          ri: Tensor, ro: Tensor, eps: float) -> Tensor:
    """``m`` times the Rescale factor, the factor never stored."""
    return m * _rescale_kernel(f, d, xi, xo, x_index, ri, ro, eps)


def _reveal_cancel_factors_kernel(f, d, p: Tensor, n: Tensor, r: Tensor, xo: Tensor,
                                  x_index: Tensor | None, ro: Tensor, eps: float
                                  ) -> tuple[Tensor, Tensor]:
    """``(s⁺, s⁻)`` of RevealCancel alone (``Δy±`` computed in the loop, never stored)."""
    return _reveal_cancel_kernel(f, d, p, n, r, xo, x_index, ro, eps)[2:]


def _reveal_cancel_factors_into_kernel(f, d, p: Tensor, n: Tensor, r: Tensor, xo: Tensor,
                                       x_index: Tensor | None, ro: Tensor, eps: float
                                       ) -> tuple[Tensor, Tensor]:
    """:func:`_reveal_cancel_factors_kernel` written into ``p`` and ``n`` (each element reads
    its own ``p``/``n`` before the write): no new activation-sized tensor."""
    sp, sn = _reveal_cancel_kernel(f, d, p, n, r, xo, x_index, ro, eps)[2:]
    return p.copy_(sp), n.copy_(sn)


def _reveal_cancel_kernel(f, d, p: Tensor, n: Tensor, r: Tensor, xo: Tensor,
                          x_index: Tensor | None, ro: Tensor, eps: float
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(Δy⁺, Δy⁻, s⁺, s⁻)`` of RevealCancel (see ``Activation.reveal_cancel_parts``)."""
    dy = take(xo, x_index) - ro
    pos = 0.5 * (f(r + p) - f(r + n) + dy)
    neg = dy - pos
    g = d(r)
    sp = torch.where(p.abs() < eps, 0.5 * (g + d(r + n)), pos / p)
    sn = torch.where(n.abs() < eps, 0.5 * (g + d(r + p)), neg / n)
    return pos, neg, sp, sn


def _pseudocount(t: Tensor, eps: float) -> Tensor:
    """The original's ``pseudocount_near_zero``: values with |t| < eps/2 are pushed to ±eps."""
    near = t.abs() < eps / 2
    return torch.where(near & (t >= 0), t + eps, torch.where(near & (t < 0), t - eps, t))


class Activation(Layer):
    """An elementwise nonlinearity ``f``. Subclasses define ``f`` and ``derivative``.

    ``nonlinear_mxts_mode`` (the original library's spelling) fixes this layer's rule for the
    original API's model wrappers; the methods of ``deeplift.attribute`` choose rules themselves.
    """

    #: its backward returns tensors it allocated (the engine may accumulate into them)
    fresh_multipliers = True

    def __init__(self, name: str | None = None, nonlinear_mxts_mode: str | None = None) -> None:
        super().__init__(name)
        self.nonlinear_mxts_mode = nonlinear_mxts_mode

    #: the original library resolves genomics-default rules only for these
    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def f_into(self, x: Tensor) -> Tensor:
        """``f(x)``, written into ``x`` where the layer can (``x`` is the caller's to lose)."""
        return self.f(x)

    def derivative(self, x: Tensor) -> Tensor:
        """``f'(x)`` elementwise; the default differentiates ``f`` with autograd."""
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(z).sum(), z)
        return g

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x)

    # -- rule state ---------------------------------------------------------------------------------
    def _reference_gradient(self, state) -> Tensor:
        inp = self.inputs[0]
        if state.options.original_quirks:  # the original evaluates f' at f(r), not at r
            return self.derivative(state.r_broadcast(self.name))
        return self.derivative(state.r_broadcast(inp))

    def _reference_gradient_at(self, state, shape: Sequence[int]):
        """``index -> f'(r)`` at those elements of a per-pair tensor of ``shape`` (see
        ``_put_where``), or None when ``f'`` depends on more than each element's value."""
        functions = self.fused_functions()
        if functions is None:
            return None
        d = functions[1]
        inp = self.name if state.options.original_quirks else self.inputs[0]
        r = state.r_broadcast(inp)
        return lambda index: d(_at(r, shape, index))

    def fused_functions(self):
        """``(f, f')`` as functions of a tensor alone (no layer state), for the fused kernels of
        the rules (``deeplift.fusion``), or None: the rules then run op by op."""
        return None

    def _fused(self, state, like: "Tensor | int", kind: str, fn):
        """The fused kernel of rule ``kind`` for this nonlinearity, or None when the rule runs
        op by op (small tensors under ``fuse="auto"``, no plain ``f``/``f'``, original quirks)."""
        if not self._fuses(state, like):
            return None
        f, d = self.fused_functions()
        return kernel((kind, f, d), lambda: partial(fn, f, d), f"{kind} {getattr(f, '__name__', '')}")

    def _fuses(self, state, like: "Tensor | int") -> bool:
        """Whether this nonlinearity's rules run fused kernels on tensors like ``like``."""
        return (self.fused_functions() is not None and not state.options.original_quirks
                and should_fuse(state.options.fuse, like))

    def _rescale_inputs(self, state) -> tuple:
        """The arguments of the fused Rescale kernels after ``m``."""
        inp = self.inputs[0]
        (xi, x_index), (xo, xo_index) = state.x_rows(inp), state.x_rows(self.name)
        if xo_index is not x_index:  # one of them was gathered already
            xi, xo, x_index = state.x(inp), state.x(self.name), None
        return (xi, xo, x_index, state.r_broadcast(inp), state.r_broadcast(self.name),
                state.options.near_zero)

    def rescale_times(self, state, m: Tensor) -> Tensor | None:
        """``m`` times the Rescale factor in one fused loop when no rule has asked for the
        factor itself (the Rescale method's backward); None when it runs op by op."""
        if (not state.difference_based or state.is_cached(self, "rescale") or m.shape[0] != 1
                or not state.final_backward):
            return None  # several targets or passes: the factor once, then a product per target
        inputs = self._rescale_inputs(state)
        if (state.owns_incoming and m.is_contiguous()
                and broadcast_shape(m.shape[1:], _rescale_shape(*inputs)) == m.shape[1:]):
            # the multipliers are ours to overwrite
            fused = self._fused(state, m.numel(), "rescale_times_into", _rescale_times_into_kernel)
        else:
            fused = self._fused(state, m.numel(), "rescale_times", _rescale_times_kernel)
        return None if fused is None else fused(True, m, *inputs)

    def rescale_factor(self, state) -> Tensor:
        def compute() -> Tensor:
            inp = self.inputs[0]
            fused = self._fused(state, state.pair_numel(inp), "rescale", _rescale_kernel)
            if fused is not None and state.difference_based:
                xi, xo, x_index, ri, ro, eps = self._rescale_inputs(state)
                if (x_index is None and xo.is_contiguous() and state.values_to_lose(self.name)
                        and xo.shape == _rescale_shape(xi, xo, x_index, ri, ro, eps)):
                    # its values are not read again: the factor takes their place
                    into = self._fused(state, xo, "rescale_into", _rescale_into_kernel)
                    return into(True, xi, xo, ri, ro, eps)
                return fused(True, xi, xo, x_index, ri, ro, eps)
            # in place on tensors of its own: each activation-sized temporary costs a pass
            # over memory and, in a plain process, page faults
            dx = state.owned_delta(self.inputs[0])
            s = state.owned_delta(self.name).div_(dx)  # inf/nan where dx == 0: replaced below
            near = _below(dx.abs_(), state.options.near_zero)
            if near is not None:
                _put_where(s, near, lambda: self._reference_gradient(state),
                           self._reference_gradient_at(state, s.shape))
            return s
        return state.cached(self, "rescale", compute)

    def reveal_cancel_factors(self, state) -> tuple[Tensor, Tensor]:
        """``(s⁺, s⁻)`` for RevealCancel's backward. Unless a split asked for the parts first,
        ``Δy⁺``/``Δy⁻`` are not kept (nor, fused, even written): two activation-sized tensors less
        at the memory peak of a pass, which is at the backward of the first, largest layers."""
        if (state.is_cached(self, "reveal_cancel")
                or type(self).reveal_cancel_parts is not Activation.reveal_cancel_parts):
            return self.reveal_cancel_parts(state)[2:]

        def compute():
            if state.options.original_quirks:
                return self._reveal_cancel(state)[2:]
            if not self._fuses(state, state.pair_numel(self.inputs[0])):
                return self._reveal_cancel_factors_eager(state)
            r = state.r_broadcast(self.inputs[0])  # (taking the split releases the input)
            (p, n), owned = state.take_split(self.inputs[0], self)
            # when nothing else reads the input's split, the factors take its place
            fused = (self._fused(state, p, "reveal_cancel_factors_into",
                                 _reveal_cancel_factors_into_kernel) if owned else
                     self._fused(state, p, "reveal_cancel_factors", _reveal_cancel_factors_kernel))
            return fused(True, p, n, r, *state.x_rows(self.name), state.r_broadcast(self.name),
                         state.options.near_zero)
        return state.cached(self, "reveal_cancel_factors", compute)

    def _reveal_cancel_factors_eager(self, state) -> tuple[Tensor, Tensor]:
        """``(s⁺, s⁻)`` op by op, a few rows at a time on CPU (``row_pieces``): ``Δy``,
        ``f(r+Δx±)`` and ``Δy±`` are a piece's temporaries, never a layer's, and when the input's
        split is handed over (nothing reads it again) the factors are written into it — the same
        arithmetic as :meth:`_reveal_cancel`, bit for bit, with no activation-sized tensor of
        its own where the fused kernel has none either."""
        inp = self.inputs[0]
        eps = state.options.near_zero
        r = state.r_broadcast(inp)  # (taking the split releases the input)
        (p, n), owned = state.take_split(inp, self)
        xo, x_index = state.x_rows(self.name)
        ro = state.r_broadcast(self.name)
        shape = broadcast_shape(p.shape, n.shape, r.shape, ro.shape,
                                xo.shape if x_index is None else (len(x_index), *xo.shape[1:]))
        near_p, near_n = _near_zero(p, eps), _near_zero(n, eps)
        # the limits where a part is near 0 read both parts: computed before they are overwritten
        limits = self._reveal_cancel_limit_values(r, p, n, shape, near_p, near_n)
        if owned and p.shape == n.shape == shape and p.is_contiguous() and n.is_contiguous():
            sp, sn = p, n
        else:
            sp, sn = p.new_empty(shape), n.new_empty(shape)
        for rows in row_pieces(shape, p.device):
            dy = (piece(xo, rows) - piece(ro, rows) if x_index is None
                  else xo.index_select(0, x_index[rows]).sub_(piece(ro, rows)))
            pos = self.f_into(piece(r, rows) + piece(p, rows))
            pos.sub_(self.f_into(piece(r, rows) + piece(n, rows))).add_(dy).mul_(0.5)
            neg = dy.sub_(pos)
            torch.div(pos, piece(p, rows), out=sp[rows])  # inf/nan where a part is 0: replaced below
            torch.div(neg, piece(n, rows), out=sn[rows])
        for put, s in zip(limits, (sp, sn)):
            if put is not None:
                put(s)
        return sp, sn

    def reveal_cancel_parts(self, state) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(Δy⁺, Δy⁻, s⁺, s⁻)``."""
        return state.cached(self, "reveal_cancel", lambda: self._reveal_cancel(state))

    def _reveal_cancel(self, state) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The RevealCancel arithmetic (``reveal_cancel_parts`` caches it)."""
        inp = self.inputs[0]
        p, n = state.split(inp)
        r = state.r_broadcast(inp)
        fr = state.r_broadcast(self.name)
        eps = state.options.near_zero
        if state.options.original_quirks:
            p, n = _pseudocount(p, eps), _pseudocount(n, eps)
            frp, frn = self.f(r + p), self.f(r + n)
            pos = 0.5 * ((frp - fr) + (self.f((r + n) + p) - frn))
            neg = 0.5 * ((frn - fr) + (self.f((r + p) + n) - frp))
            return pos, neg, pos / p, neg / n
        fused = self._fused(state, p, "reveal_cancel", _reveal_cancel_kernel)
        if fused is not None:
            return fused(True, p, n, r, *state.x_rows(self.name), fr, eps)
        dy = state.delta(self.name)
        frp, frn = self.f(r + p), self.f(r + n)
        # Δy⁺ = ½[(f(r+p) − f(r)) + (f(x) − f(r+n))] = ½[f(r+p) − f(r+n) + Δy]; Δy⁻ = Δy − Δy⁺
        pos = (frp - frn).add_(dy).mul_(0.5)
        neg = dy - pos
        sp, sn = pos / p, neg / n  # inf/nan where a part is 0: replaced just below
        near_p, near_n = _near_zero(p, eps), _near_zero(n, eps)
        if near_p is not None or near_n is not None:
            # the limits of Δy⁺/Δx⁺ as Δx⁺ → 0 and of Δy⁻/Δx⁻ as Δx⁻ → 0; not f'(r) alone:
            # Δy⁺ also holds f(x) − f(r+Δx⁻), whose slope in Δx⁺ is f'(r+Δx⁻)
            self._reveal_cancel_limits(r, p, n, sp, sn, near_p, near_n)
        return pos, neg, sp, sn

    def _reveal_cancel_limits(self, r: Tensor, p: Tensor, n: Tensor, sp: Tensor, sn: Tensor,
                              near_p: Near | None, near_n: Near | None) -> None:
        """``s± = ½[f'(r) + f'(r + Δx∓)]`` where ``|Δx±|`` is near zero, in place."""
        limits = self._reveal_cancel_limit_values(r, p, n, sp.shape, near_p, near_n)
        for put, s in zip(limits, (sp, sn)):
            if put is not None:
                put(s)

    def _reveal_cancel_limit_values(self, r: Tensor, p: Tensor, n: Tensor, shape: Sequence[int],
                                    near_p: Near | None, near_n: Near | None) -> list:
        """For ``(s⁺, s⁻)`` of ``shape``: a function putting in the limits where a part is near
        zero (see :meth:`_reveal_cancel_limits`), the values computed now; None: nowhere."""
        g: list[Tensor] = []  # f'(r) over the whole tensor, once, if a mask needs it everywhere
        d = None if self.fused_functions() is None else self.fused_functions()[1]
        puts = []
        for near, other in ((near_p, n), (near_n, p)):
            if near is None:
                puts.append(None)
                continue

            def everywhere(other: Tensor = other) -> Tensor:
                if not g:
                    g.append(self.derivative(r))
                return 0.5 * (g[0] + self.derivative(r + other))

            def at(index: tuple[Tensor, ...], other: Tensor = other) -> Tensor:
                r_at = _at(r, shape, index)
                return 0.5 * (d(r_at) + d(r_at + _at(other, shape, index)))

            puts.append(_values_where(near, everywhere, None if d is None else at, shape))
        return puts

    # -- the two hooks the engine calls: the rule the method chose does the work ----------------
    def split(self, state: State) -> Split:
        return nonlinearity_rule(state.rule(self)).split(self, state)

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return nonlinearity_rule(state.rule(self)).backward(self, state, m_pos, m_neg)

    def rereads_values(self, state: State) -> bool:
        # the built-in rules cache what their backward reads; a rule of the user's may not
        return getattr(nonlinearity_rule(state.rule(self)), "rereads_values", True)

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        if reference:  # Rescale's Δy/Δx; RevealCancel's parts (and its input's split)
            return (self.inputs[0], self.name) if rule in ("rescale", "reveal_cancel") else None
        # f'(x) at its input (the built-in gradient rules); DeconvNet and pass-through read nothing
        if rule in ("deconvnet", "pass_through"):
            return ()
        return (self.inputs[0],) if rule in ("gradient", "guided_backprop") else super().pass_reads(
            rule, reference)

    def splits_read(self, rule: str) -> tuple[str, ...]:
        return (self.inputs[0],) if rule == "reveal_cancel" else ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        if rule not in ("rescale", "reveal_cancel"):
            return None
        return (self.inputs[0], self.name), (self.inputs[0],)  # its factors, its input's split

    def gradient(self, state: State) -> Tensor:
        """``f'(x)`` at the inputs of the pass."""
        return state.cached(self, "gradient", lambda: self.derivative(state.x(self.inputs[0])))

    def times_gradient(self, state: State, m: Tensor) -> Tensor:
        """``f'(x)·m`` for multipliers ``m`` (T, P, ...); a layer may fuse the two."""
        return self.gradient(state) * m


class Elementwise(Activation):
    """Any elementwise function ``f`` as a nonlinearity with every rule — for an op of the
    user's (see ``deeplift.rules.register_op``). ``derivative`` defaults to autograd of ``f``."""

    def __init__(self, f, derivative=None, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self._f, self._derivative = f, derivative

    def f(self, x: Tensor) -> Tensor:
        return self._f(x)

    def derivative(self, x: Tensor) -> Tensor:
        return super().derivative(x) if self._derivative is None else self._derivative(x)

    def describe(self) -> str:
        return f"Elementwise({getattr(self._f, '__name__', 'f')})"


# ---------------------------------------------------------------------------------------------
# the nonlinearity rules, registered by name (deeplift.rules); methods.py chooses among them


class RescaleSplit:
    """Rules whose split scales both parts of the input's split by the Rescale factor
    ``Δy/Δx`` (every rule but RevealCancel, which splits Δy its own way)."""

    def split(self, layer: Activation, state: State) -> Split:
        p, n = state.split(layer.inputs[0])
        s = layer.rescale_factor(state)
        return s * p, s * n


class Rescale(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        if m_neg is None:
            fused = layer.rescale_times(state, m_pos)
            if fused is not None:
                return [(fused, None)]
        s = layer.rescale_factor(state)
        if m_neg is None and state.owns_incoming and m_pos.is_contiguous() and s.shape == m_pos.shape[1:]:
            return [(m_pos.mul_(s), None)]  # the multipliers are ours to overwrite
        if m_neg is None and state.final_backward and m_pos.shape[0] == 1 and s.shape == m_pos.shape[1:]:
            return [(s.mul_(m_pos[0]).unsqueeze(0), None)]  # s is not read again
        return [(s * m_pos, None if m_neg is None else s * m_neg)]


class RevealCancel:
    def split(self, layer: Activation, state: State) -> Split:
        pos, neg, _, _ = layer.reveal_cancel_parts(state)
        return pos, neg

    def backward(self, layer, state, m_pos, m_neg):
        sp, sn = layer.reveal_cancel_factors(state)
        m_neg = m_pos if m_neg is None else m_neg
        if state.final_backward and m_pos.shape[0] == 1 and sp.shape == m_pos.shape[1:] == sn.shape:
            # the factors are not read again: multiply into them instead of allocating
            return [(sp.mul_(m_pos[0]).unsqueeze(0), sn.mul_(m_neg[0]).unsqueeze(0))]
        return [(sp * m_pos, sn * m_neg)]


class Gradient(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        return [(layer.times_gradient(state, m_pos),
                 None if m_neg is None else layer.times_gradient(state, m_neg))]


class GuidedBackprop(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        g = layer.gradient(state) * (m_pos > 0)
        return [(g * m_pos, None if m_neg is None else g * m_neg)]


class GuidedBackpropRescale(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        s = layer.rescale_factor(state)
        return [(s * (m_pos > 0) * m_pos, None if m_neg is None else s * (m_neg > 0) * m_neg)]


class DeconvNet(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        # f of the multipliers with the targets folded into the batch axis: an f with
        # per-channel parameters (PReLU) broadcasts along the layer's own axes
        def f(m):
            return unflat_targets(layer.f(flat_targets(m)), m.shape[0])
        return [(f(m_pos), None if m_neg is None else f(m_neg))]


class PassThrough(RescaleSplit):
    def backward(self, layer, state, m_pos, m_neg):
        return [(m_pos, m_neg)]


for _name, _rule in [("rescale", Rescale()), ("reveal_cancel", RevealCancel()), ("gradient", Gradient()),
                     ("guided_backprop", GuidedBackprop()),
                     ("guided_backprop_rescale", GuidedBackpropRescale()),
                     ("deconvnet", DeconvNet()), ("pass_through", PassThrough())]:
    # a second backward over the same pairs reads only what the first cached (factors, f'(x));
    # a rule registered by a user is assumed to read values (Activation.rereads_values)
    _rule.rereads_values = False
    register_nonlinearity_rule(_name, _rule)


def _step(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _sigmoid_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _tanh_derivative(x: Tensor) -> Tensor:
    return 1 - torch.tanh(x) ** 2


class ReLU(Activation):
    def f(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def f_into(self, x: Tensor) -> Tensor:
        return torch.relu_(x)

    def fused_functions(self):
        return torch.relu, _step

    def derivative(self, x: Tensor) -> Tensor:
        return _step(x)

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        if not reference and rule in ("gradient", "guided_backprop"):
            return (self.name,)  # f'(x) = [x > 0] = [f(x) > 0]: its output, as autograd keeps
        return super().pass_reads(rule, reference, paired)

    def gradient(self, state: State) -> Tensor:
        # [x > 0] read off the output (the values a gradient pass keeps, see pass_reads)
        return state.cached(self, "gradient", lambda: _step(state.x(self.name)))

    def times_gradient(self, state: State, m: Tensor) -> Tensor:
        # m·[y>0] in one fused pass (autograd's own ReLU backward), not f'(x) then a product:
        # the gradient methods and integrated gradients spend most of their time here
        if not state.final_backward or state.is_cached(self, "gradient"):
            return super().times_gradient(state, m)  # later passes read f'(x), not the values
        y = state.x(self.name)
        if state.owns_incoming and m.is_contiguous() and m.shape[1:] == y.shape:
            return torch.ops.aten.threshold_backward.grad_input(m, y, 0, grad_input=m)
        return torch.ops.aten.threshold_backward(m, y, 0)


class LeakyReLU(Activation):
    def __init__(self, negative_slope: float = 0.01, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.negative_slope = float(negative_slope)

    def f(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))


class PReLU(Activation):
    """``max(x, 0) + alpha·min(x, 0)``; ``alpha`` broadcasts against the per-example shape (for
    PyTorch's per-channel PReLU it is reshaped along ``axis``)."""

    def __init__(self, alpha, axis: int | None = 1, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.alpha = as_tensor(alpha)
        self.axis = axis

    def _alpha(self, x: Tensor) -> Tensor:
        a = self.alpha
        if a.numel() == 1:
            return a.reshape(())
        if self.axis is None:  # alpha already shaped like the example (Keras layout)
            return a
        axis = self.axis % x.ndim
        return a.reshape((-1,) + (1,) * (x.ndim - axis - 1))

    def f(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, x * self._alpha(x))

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self._alpha(x) * torch.ones_like(x))


class ELU(Activation):
    def __init__(self, alpha: float = 1.0, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.alpha = float(alpha)

    def f(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(torch.clamp(x, max=0)))


class SELU(Activation):
    def f(self, x: Tensor) -> Tensor:
        return F.selu(x)


class Sigmoid(Activation):
    def f(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def f_into(self, x: Tensor) -> Tensor:
        return torch.sigmoid_(x)

    def derivative(self, x: Tensor) -> Tensor:
        return _sigmoid_derivative(x)

    def fused_functions(self):
        return torch.sigmoid, _sigmoid_derivative


class Tanh(Activation):
    def f(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def f_into(self, x: Tensor) -> Tensor:
        return torch.tanh_(x)

    def derivative(self, x: Tensor) -> Tensor:
        return _tanh_derivative(x)

    def fused_functions(self):
        return torch.tanh, _tanh_derivative


class Softplus(Activation):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.beta, self.threshold = float(beta), float(threshold)

    def f(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)


class SiLU(Activation):
    def f(self, x: Tensor) -> Tensor:
        return F.silu(x)


class GELU(Activation):
    def __init__(self, approximate: str = "none", name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.approximate = approximate

    def f(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)


class Exp(Activation):
    def f(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.exp(x)


class Clamp(Activation):
    """``clamp(x, min, max)`` (also ``hardtanh`` and ``relu6``); either bound may be None.

    ``inclusive``: whether the gradient passes at the bounds themselves (``torch.clamp``) or not
    (``hardtanh``), so that the gradient method equals autograd for each spelling."""

    def __init__(self, min: float | None = None, max: float | None = None, inclusive: bool = True,
                 name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)
        self.inclusive = inclusive

    def f(self, x: Tensor) -> Tensor:
        return torch.clamp(x, self.min, self.max)

    def derivative(self, x: Tensor) -> Tensor:
        inside = torch.ones_like(x, dtype=torch.bool)
        if self.min is not None:
            inside &= (x >= self.min) if self.inclusive else (x > self.min)
        if self.max is not None:
            inside &= (x <= self.max) if self.inclusive else (x < self.max)
        return inside.to(x.dtype)


class _PerPairLinearMap(PerPairLinearMap):
    """Softmax-family maps over ``dim``: the shared exponentials and their Rescale factors."""

    def __init__(self, dim: int = -1, name: str | None = None,
                 nonlinear_mxts_mode: str | None = None) -> None:
        super().__init__(name)
        self.dim = int(dim)
        self.nonlinear_mxts_mode = nonlinear_mxts_mode

    def _dim(self, ndim: int) -> int:
        return self.dim - ndim if self.dim >= 0 else self.dim

    def _exp_parts(self, state):
        """For ``e = exp(x − c)`` over ``dim`` (one shift ``c`` per pair for input and reference):
        ``(dim, s_e, e_x, e_r, E_x, E_r)`` with ``s_e`` the Rescale factor of ``e`` (for gradient
        methods ``e_x`` itself and no reference values)."""
        def compute():
            x = state.x(self.inputs[0])
            d = self._dim(x.ndim)
            if not state.difference_based:
                e = torch.exp(x - x.amax(d, keepdim=True))
                return d, e, e, None, e.sum(d, keepdim=True), None
            r = state.r(self.inputs[0])
            c = torch.maximum(x.amax(d, keepdim=True), r.amax(d, keepdim=True))
            ex, er = torch.exp(x - c), torch.exp(r - c)
            dx = x - r
            near = ~(dx.abs() >= state.options.near_zero)  # also -inf − -inf: a masked entry
            s_e = torch.where(near, er, (ex - er) / torch.where(near, torch.ones_like(dx), dx))
            return d, s_e, ex, er, ex.sum(d, keepdim=True), er.sum(d, keepdim=True)
        return state.cached(self, "exp", compute)

    def _rescale_of_sum(self, state, fx: Tensor, fr: Tensor, sx: Tensor, sr: Tensor,
                        slope_at_ref: Tensor) -> Tensor:
        """Rescale factor of a function of the exp-sum: (f(Sx) − f(Sr)) / (Sx − Sr)."""
        ds = sx - sr
        near = ds.abs() < state.options.near_zero * sr
        return torch.where(near, slope_at_ref, (fx - fr) / torch.where(near, torch.ones_like(ds), ds))



class Softmax(_PerPairLinearMap):
    """Softmax over ``dim``, usable anywhere in a network (attention weights, gates).

    DeepLIFT rules see it as ``y = exp(z)`` of the log-softmax ``z = x − log Σexp(x)``: the
    log-softmax's per-pair map (Rescale factors ``s_e`` of the exponentials and ``s_log`` of the
    log of their sum), then the Rescale factor ``s_y = Δy/Δz`` of the outer ``exp``:
    ``Δy = s_y·(Δx − s_log·Σ s_e·Δx)``. (Splitting ``y = e·(1/Σe)`` by the Shapley product rule
    is exact too, but when the input's and the reference's sums differ by orders of magnitude —
    large attention scores — its two terms are huge and cancel, which loses float precision and
    gives meaningless contributions. Every factor here is bounded.)
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(x, self.dim)

    def _factors(self, state):
        def compute():
            d, s_e, _, er, sx, sr = self._exp_parts(state)
            if er is None:
                return d, s_e, 1 / sx, s_e / sx
            s_log = self._rescale_of_sum(state, torch.log(sx), torch.log(sr), sx, sr, 1 / sr)
            zx = torch.log_softmax(state.x(self.inputs[0]), d)
            zr = torch.log_softmax(state.r(self.inputs[0]), d)
            yx, yr = torch.exp(zx), torch.exp(zr)
            dz = zx - zr
            near = ~(dz.abs() >= state.options.near_zero)  # also a masked (-inf) entry
            s_y = torch.where(near, yr, (yx - yr) / torch.where(near, torch.ones_like(dz), dz))
            return d, s_e, s_log, s_y
        return state.cached(self, "factors", compute)

    def _apply(self, state, v: Tensor) -> Tensor:
        d, s_e, s_log, s_y = self._factors(state)
        return s_y * (v - s_log * (s_e * v).sum(d, keepdim=True))

    def _apply_transpose(self, state, m: Tensor) -> Tensor:
        d, s_e, s_log, s_y = self._factors(state)
        a = s_y * m
        return a - s_e * (s_log * a.sum(d, keepdim=True))


class LogSoftmax(_PerPairLinearMap):
    """``log_softmax`` over ``dim``: ``y = (x − c) − log E`` with ``E = Σ exp(x − c)``; the log of
    the sum takes a Rescale factor, the exponentials theirs."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(x, self.dim)

    def _factors(self, state):
        def compute():
            d, s_e, _, er, sx, sr = self._exp_parts(state)
            if er is None:
                return d, s_e, 1 / sx
            return d, s_e, self._rescale_of_sum(state, torch.log(sx), torch.log(sr), sx, sr, 1 / sr)
        return state.cached(self, "factors", compute)

    def _apply(self, state, v: Tensor) -> Tensor:
        d, s_e, s_log = self._factors(state)
        return v - s_log * (s_e * v).sum(d, keepdim=True)

    def _apply_transpose(self, state, m: Tensor) -> Tensor:
        d, s_e, s_log = self._factors(state)
        return m - s_e * (s_log * m.sum(d, keepdim=True))
