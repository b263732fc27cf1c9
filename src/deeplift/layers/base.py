"""The layer protocol every DeepLIFT layer follows, and the families most layers belong to.

A layer owns all of its math (docs/architecture.md, docs/rules.md):

* ``forward(*inputs)`` — the ordinary forward function. The engine calls it once on the inputs
  and the references stacked along the batch axis.
* ``split(state)`` — the difference-from-reference of the output, split into a positive and a
  negative part ``(Δy⁺, Δy⁻)`` with ``Δy⁺ + Δy⁻ = Δy``. RevealCancel needs this split of the
  layer that feeds it; it is computed lazily and only where needed.
* ``backward(state, m_pos, m_neg)`` — maps the positive and negative multipliers of the output to
  those of each input. ``m_neg is None`` means "equal to ``m_pos``" (true for every method but
  RevealCancel), which lets linear layers run a single transposed op.

Multipliers carry a leading *target* axis: shape ``(T, P, *layer_shape)`` for ``T`` targets and
``P`` (example, reference) pairs; per-pair state from ``state`` has shape ``(P, *layer_shape)`` and
broadcasts against them.

The invariant each backward keeps (it is what makes summation-to-delta hold for the whole graph):
``Σ_out (m⁺·Δy⁺ + m⁻·Δy⁻) = Σ_in (m⁺_in·Δx⁺_in + m⁻_in·Δx⁻_in)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from ..fusion import kernel, should_fuse

Multipliers = tuple[Tensor, "Tensor | None"]
Split = tuple[Tensor, Tensor]


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The shape ``shapes`` broadcast to, as ``torch.broadcast_shapes`` gives it but in plain
    Python: the rules ask per layer and per call, where torch's version costs tens of µs."""
    out = [1] * max(map(len, shapes), default=0)
    for shape in shapes:
        for k, n in enumerate(shape, len(out) - len(shape)):
            if n != 1:
                if out[k] not in (1, n):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[k] = n
    return tuple(out)


class RuleOptionsView(Protocol):
    """The numerical choices a rule may read (``engine.RuleOptions`` gives them)."""

    near_zero: float
    max_routing: str
    original_quirks: bool
    fuse: "bool | str"


class State(Protocol):
    """What a layer's ``split``/``backward`` may read during one pass — the whole contract
    between the layers and the engine (``engine.PassState`` implements it).

    Per-pair tensors have shape ``(P, *layer_shape)`` for the ``P`` (example, reference) pairs of
    the batch; multipliers carry a leading target axis ``(T, P, ...)``. Everything is computed
    on first use and kept for the rest of the pass, so a rule may ask again at no cost.
    """

    #: differences from a reference (DeepLIFT methods) rather than plain gradients
    difference_based: bool
    options: RuleOptionsView
    #: the last backward of the pass: what a layer's rule cached is read by nothing after its
    #: own backward, which may overwrite it (saves an activation-sized allocation per layer)
    final_backward: bool
    #: the multipliers given to the running ``backward`` are held by nothing else: it may write
    #: its result into them (and return them)
    owns_incoming: bool

    def x(self, name: str) -> Tensor:
        """Layer ``name``'s output for the example of every pair, (P, ...)."""

    def pair_numel(self, name: str) -> int:
        """The number of elements of a per-pair tensor of layer ``name``."""

    def x_rows(self, name: str) -> tuple[Tensor, "Tensor | None"]:
        """``x(name)`` as (rows, index): gathered by ``take(rows, index)`` (for fused kernels)."""

    def r(self, name: str) -> Tensor:
        """Its output for the reference of every pair, (P, ...) (DeepLIFT methods only)."""

    def r_broadcast(self, name: str) -> Tensor:
        """Like ``r``, but one row that broadcasts when every pair shares the reference."""

    def delta(self, name: str) -> Tensor:
        """``x − r`` of layer ``name`` (for gradient methods, ``x``: only its sign is read)."""

    def owned_delta(self, name: str) -> Tensor:
        """``x − r`` of layer ``name`` as a new tensor the caller may overwrite."""

    def split(self, name: str) -> Split:
        """``(Δ⁺, Δ⁻)`` of layer ``name``'s output, by that layer's own ``split``."""

    def values_to_lose(self, name: str) -> bool:
        """Whether layer ``name``'s example rows (what ``x_rows`` gives) may be overwritten:
        while ``take_split`` computes the split it hands over, or during the layer's own
        backward when its values leave after it; only when nothing else holds those rows."""

    def take_split(self, name: str, reader: "Layer") -> tuple[Split, bool]:
        """``split(name)`` for ``reader``'s last read of it in this pass, and whether ``reader``
        may overwrite it: True when nothing reads that split or layer ``name``'s values later
        (the last backward, ``reader``'s own running, ``reader`` the last of ``name``'s consumers
        to go backward, ``name`` a layer that ``hands_over_split``); both then leave the pass."""

    def rule(self, layer: "Layer") -> str:
        """The nonlinearity rule the method chose for ``layer`` (see ``methods.py``)."""

    def cached(self, layer: "Layer", key: str, compute: Callable[[], Any]) -> Any:
        """Per-pass memo for rule state shared by ``split`` and ``backward``."""

    def is_cached(self, layer: "Layer", key: str) -> bool:
        """Whether ``cached(layer, key, ...)`` has computed its value in this pass."""

    def pair_shape(self, name: str, batch: int) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
        """Shape (batch axis set to ``batch``), dtype and device of layer ``name``'s output."""

    def is_constant(self, name: str) -> bool:
        """Whether layer ``name`` does not depend on the inputs (its Δ is zero)."""

    def select_x_rows(self, t: Tensor) -> Tensor:
        """The rows of every pair's example from a tensor aligned with the examples' forward rows."""

    def forward_memo(self, name: str) -> Any:
        """What layer ``name``'s ``forward_with_memo`` kept in this pass's forward, for the
        examples' forward rows (as ``select_x_rows`` takes them), or None. Handed over: a second
        call gives None (the reader caches what it derives from it)."""


def positive(t: Tensor) -> Tensor:
    """``t·[t>0]`` (zeros go to neither part)."""
    return t * (t > 0)


def negative(t: Tensor) -> Tensor:
    """``t·[t<0]``."""
    return t * (t < 0)


def flat_targets(m: Tensor) -> Tensor:
    """(T, P, ...) -> (T·P, ...) so batched torch ops can run on all targets at once."""
    return m.reshape(m.shape[0] * m.shape[1], *m.shape[2:])


def unflat_targets(m: Tensor, n_targets: int) -> Tensor:
    return m.reshape(n_targets, m.shape[0] // n_targets, *m.shape[1:])


class Layer:
    """Base of every layer: a named node with ordered inputs (names of other layers)."""

    #: how many inputs the layer takes (None = any number >= 1)
    n_inputs: int | None = 1
    #: its split is a pair of tensors of its own and its backward reads neither its split nor
    #: its output values: in the last backward, its last consumer may take both over
    #: (``State.take_split``)
    hands_over_split = False

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.inputs: list[str] = []

    # -- graph building -------------------------------------------------------------------------
    def set_inputs(self, inputs: "Layer | str | Sequence[Layer | str]") -> "Layer":
        """Wire this layer after ``inputs`` (layers or layer names); returns self for chaining."""
        if isinstance(inputs, (Layer, str)):
            inputs = [inputs]
        names = [i if isinstance(i, str) else i.name for i in inputs]
        if any(n is None for n in names):
            raise ValueError(f"layer {self.name!r}: inputs must be named before wiring")
        if self.n_inputs is not None and len(names) != self.n_inputs:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) takes {self.n_inputs} "
                             f"input(s), got {len(names)}")
        self.inputs = list(names)
        self._input_layers = [i for i in inputs if isinstance(i, Layer)]
        return self

    # -- the math ---------------------------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_with_memo(self, *inputs: Tensor) -> tuple[Tensor, object | None]:
        """``forward`` plus what the rules can reuse from it (e.g. max-pool argmax indices), or
        None. The engine keeps the memo with the pass: layers are shared by concurrent calls and
        hold no per-call state."""
        return self.forward(*inputs), None

    def split(self, state: State) -> Split:
        raise NotImplementedError(f"{type(self).__name__} has no split rule")

    def rereads_values(self, state: State) -> bool:
        """Whether this layer's backward, run again in a later pass over the same pairs (more
        targets than one pass holds), reads layer values rather than only shapes and the rule
        state its first run cached (``State.cached``). Where it and every consumer of a layer
        say no, that layer's values leave each pass once its backward is done."""
        return True

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        """The layers whose values (besides shapes) this layer's backward reads: in a pass of a
        gradient method or integrated gradients (``reference`` False), or of a DeepLIFT method
        (``rule``: the rule the method chose for it; ``paired``: whether it receives two
        multipliers, m⁺ ≠ m⁻). The splits it asks for are ``splits_read``'s. The forward of a
        pass keeps only these (and the target and score layers), as autograd keeps only what its
        backward reads; None: not known, every value is kept. By default its inputs and itself
        without a reference, None with one."""
        return None if reference else (*self.inputs, self.name)

    def splits_read(self, rule: str) -> tuple[str, ...]:
        """The layers whose splits (Δ⁺, Δ⁻) this layer's backward asks for under ``rule``."""
        return ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """What computing this layer's own split reads: (layers whose values, layers whose
        splits); None: not known."""
        return None

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        raise NotImplementedError(f"{type(self).__name__} has no backward rule")

    # -- bookkeeping ------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers of the layer (moved by ``Model.to``)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}

    def to(self, *args, **kwargs) -> "Layer":
        for k, v in self.tensors().items():
            setattr(self, k, v.to(*args, **kwargs))
        return self

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, inputs={self.inputs})"


class Input(Layer):
    """A model input. ``shape`` excludes the batch axis. Its split is ``(Δx⁺, Δx⁻)``."""

    n_inputs = 0

    def __init__(self, shape: Sequence[int] | None = None, name: str | None = None,
                 batch_shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(name)
        if shape is None and batch_shape is not None:
            shape = tuple(batch_shape)[1:]
        self.shape = None if shape is None else tuple(int(s) if s is not None else None for s in shape)
        #: the dtype the source model was captured with (the model's dtype when no layer has a
        #: floating tensor of its own, e.g. a model of pooling and reshapes only); an integer dtype
        #: for token ids (the input of an embedding), which stay integer
        self.dtype = dtype

    def to(self, *args, **kwargs) -> "Layer":
        dtype = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
        if dtype is not None and self.dtype is not None and self.dtype.is_floating_point:
            self.dtype = dtype  # integer inputs (token ids) stay integer
        return self

    def forward(self, *inputs: Tensor) -> Tensor:  # never called: the engine feeds inputs
        raise RuntimeError("Input layers are fed by the engine")

    def split(self, state: State) -> Split:
        d = state.delta(self.name)
        return positive(d), negative(d)

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return (self.name,), ()


class Constant(Layer):
    """A tensor that does not depend on the inputs (a lifted constant or a parameter used as data).

    Its difference-from-reference is zero, so it receives no contributions.
    """

    n_inputs = 0

    def __init__(self, value: Tensor, name: str | None = None) -> None:
        super().__init__(name)
        self.value = value

    def forward(self) -> Tensor:
        return self.value


class SignPreservingLinear(Layer):
    """A linear map whose split is the map applied to each part of the input's split.

    Pooling averages, reductions, reshapes, slices, padding, concatenation and addition: no weight
    can flip a sign, so ``Δy⁺ = L(Δx⁺)``, ``Δy⁻ = L(Δx⁻)`` and the multipliers go back through
    ``Lᵀ`` separately. Subclasses give ``linear`` (the map without any constant offset) and may
    give a fast ``transpose``; the default transposes with autograd.
    """

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.linear(*inputs)

    def linear(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def rereads_values(self, state: State) -> bool:
        return False  # its transpose reads shapes only

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        return ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        # (a subclass with a split of its own says what it reads, or is not known)
        if type(self).split is not SignPreservingLinear.split:
            return None
        return (), tuple(self.inputs)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        """``Lᵀ m`` for ``m`` of shape (B, *out) where B is a multiple of the number of pairs."""
        shapes = [state.pair_shape(i, m.shape[0]) for i in self.inputs]
        return vjp_of_linear(self.linear, shapes, m)

    def split(self, state: State) -> Split:
        parts = [state.split(i) for i in self.inputs]
        return self.linear(*[p for p, _ in parts]), self.linear(*[n for _, n in parts])

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        t = m_pos.shape[0]
        if m_neg is None:
            ins = self.transpose(state, flat_targets(m_pos))
            return [(unflat_targets(i, t), None) for i in ins]
        both = self.transpose(state, torch.cat([flat_targets(m_pos), flat_targets(m_neg)]))
        out = []
        for i in both:
            p, n = i.chunk(2)
            out.append((unflat_targets(p, t), unflat_targets(n, t)))
        return out


def vjp_of_linear(fn, input_shapes: list[tuple[tuple[int, ...], torch.dtype, torch.device]],
                  m: Tensor) -> list[Tensor]:
    """Transpose of a linear ``fn`` applied to ``m``: the gradient of ``<fn(z), m>`` w.r.t. ``z``."""
    with torch.enable_grad():
        zs = [torch.zeros(s, dtype=dt, device=dev, requires_grad=True) for s, dt, dev in input_shapes]
        out = fn(*zs)
        grads = torch.autograd.grad(out, zs, grad_outputs=m, allow_unused=True)
    return [torch.zeros(z.shape, dtype=z.dtype, device=z.device) if g is None else g
            for z, g in zip(zs, grads)]


def split_by_spread(total: Tensor, spread: Tensor, n_terms: int, fuse: bool = False) -> Split:
    """``(Δ⁺, Δ⁻)`` from their sum ``total`` and difference ``spread`` (= |W|·|Δx| ≥ 0).

    A part smaller than the rounding error of the sums (``n_terms·eps·spread``) is set to exactly
    zero — as it is when no term has that sign — so that RevealCancel sees a true zero rather
    than rounding noise, whose ratio to its own output would be a meaningless multiplier. The
    sum of the parts is ``total`` either way. Both are overwritten: ``spread`` becomes
    ``Δ⁺`` and ``total`` ``Δ⁻``.
    """
    k = 1 - 2 * n_terms * torch.finfo(spread.dtype).eps
    return kernel("spread_split", lambda: _split_in_place, "spread split")(fuse, total, spread, k)


def split_by_spread_of(x: "tuple[Tensor, Tensor | None]", r: Tensor, spread: Tensor, n_terms: int,
                       fuse: bool, into_x: bool = False) -> Split:
    """:func:`split_by_spread` of ``total = x − r`` (the layer's own outputs, ``x`` as
    ``State.x_rows`` gives it), in one kernel. ``spread`` is overwritten: it becomes ``Δ⁺``
    (one activation-sized tensor fewer at the split, where a pass's memory peaks); with
    ``into_x`` (the rows are the caller's to lose), ``Δ⁻`` is written into the rows: one more."""
    k = 1 - 2 * n_terms * torch.finfo(spread.dtype).eps
    rows, index = x
    if into_x and index is None and rows.shape == spread.shape and rows.is_contiguous():
        return kernel("spread_split_xr_into", lambda: _spread_split_xr_into,
                      "spread split")(fuse, rows, r, spread, k)
    return kernel("spread_split_xr", lambda: _spread_split_xr, "spread split")(fuse, rows, index,
                                                                              r, spread, k)


def take(rows: Tensor, index: "Tensor | None") -> Tensor:
    """The per-pair tensor of ``State.x_rows``' (rows, index)."""
    return rows if index is None else rows.index_select(0, index)


#: elements per piece of rule work done op by op on CPU (a piece's temporaries stay in the
#: caches and in memory the C library keeps, where an activation-sized one is mapped afresh; a
#: GPU's caching allocator keeps its blocks, and there each op is a kernel launch: one piece)
PIECE = 1 << 17


def row_pieces(shape: Sequence[int], device: torch.device) -> list[slice]:
    """Slices of the first axis of a tensor of ``shape`` on ``device``: about ``PIECE``
    elements each (at least one row) on CPU, for op-by-op rule work piece by piece; else one."""
    step = (max(1, PIECE // max(1, math.prod(shape[1:]))) if device.type == "cpu"
            else max(1, shape[0]))
    return [slice(i, i + step) for i in range(0, shape[0], step)]


def piece(t: Tensor, rows: slice) -> Tensor:
    """``t``'s ``rows``, or ``t`` itself when it is one row that broadcasts over them."""
    return t if t.shape[0] == 1 else t[rows]


def _split_in_place(total: Tensor, spread: Tensor, k: float) -> Split:
    """``Δ⁺ = ½(total + c)`` written into ``spread`` and ``Δ⁻ = total − Δ⁺`` into ``total``,
    where ``c = |total|`` if ``|total| ≥ k·spread`` (every term of one sign: the two agree to
    rounding, and then one part is exactly 0 and the other exactly ``total``), else ``spread``.
    ``c`` is ``lerp`` with a 0/1 weight, which selects exactly (at weight 1 it gives
    ``end − (end − start)·0``): PyTorch's CPU ``where`` is ~10× slower than an arithmetic op.
    Op by op on CPU, the work goes piece by piece over the flattened tensors: the two
    temporaries are a piece's, not the layer's (at a RevealCancel pass's memory peak, the split
    of its first convolution, they weighed two of its outputs)."""
    if (not torch.compiler.is_compiling() and total.numel() > PIECE and total.device.type == "cpu"
            and total.shape == spread.shape and total.is_contiguous() and spread.is_contiguous()):
        t, s = total.view(-1), spread.view(-1)
        for i in range(0, len(t), PIECE):
            _split_in_place(t[i:i + PIECE], s[i:i + PIECE], k)
        return spread, total
    a = total.abs()
    choose_a = spread * k
    torch.ge(a, choose_a, out=choose_a)  # (as 0/1 in a float tensor: lerp's weight)
    pos = spread.lerp_(a, choose_a).add_(total).mul_(0.5)
    return pos, total.sub_(pos)


def _spread_split_xr(x_rows: Tensor, x_index: "Tensor | None", r: Tensor, spread: Tensor,
                     k: float) -> Split:
    return _split_in_place(take(x_rows, x_index) - r, spread, k)


def _spread_split_xr_into(x_rows: Tensor, r: Tensor, spread: Tensor, k: float) -> Split:
    # (the difference taken in the rows)
    return _split_in_place(x_rows.sub_(r), spread, k)


class SignSplitLinear(Layer):
    """A weighted linear map (dense, convolution) whose weights can flip signs.

    DeepLIFT's linear rule: ``Δy⁺ = W⁺Δx⁺ + W⁻Δx⁻``, ``Δy⁻ = W⁻Δx⁺ + W⁺Δx⁻`` (the bias cancels),
    and the multipliers go back through ``W⁺ᵀ``/``W⁻ᵀ`` according to the sign of each input's
    Δx, with the plain average for Δx = 0. Both are computed with one op of ``|W|`` besides the
    ordinary ``W``:

    * ``Δy⁺ − Δy⁻ = |W|·|Δx|``, so ``Δy± = ½(W·Δx ± |W|·|Δx|)`` (see :func:`split_by_spread`);
    * writing ``m± = a ± b`` (``a = ½(m⁺+m⁻)``, ``b = ½(m⁺−m⁻)``), the input multiplier is
      ``Wᵀa + sign(Δx)·|W|ᵀb`` — just ``Wᵀm`` when ``m⁺ = m⁻``.

    Subclasses give ``apply(x, weight)`` (no bias), ``apply_transpose(m, weight, input_shape)``
    and ``forward``.
    """

    #: its backward returns tensors it allocated (the engine may accumulate into them)
    fresh_multipliers = True
    #: its split is new tensors; its backward reads only its input's Δx
    hands_over_split = True

    weight: Tensor

    def apply(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_transpose(self, m: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        raise NotImplementedError

    def split(self, state: State) -> Split:
        if state.options.original_quirks:
            # the original sums the positive and the negative terms separately, so a part with
            # no terms is exactly 0 (the one-op form below leaves ±1 ulp of Δy there, which
            # RevealCancel's finite differences of the next layer turn into different multipliers)
            d = state.delta(self.inputs[0])
            dp, dn = positive(d), negative(d)
            wp, wn = positive(self.weight), negative(self.weight)
            return self.apply(dp, wp) + self.apply(dn, wn), self.apply(dp, wn) + self.apply(dn, wp)
        d = state.delta(self.inputs[0])
        spread = self.apply(d.abs(), self.weight.abs())
        fuse = should_fuse(state.options.fuse, spread)
        if not state.difference_based:
            return split_by_spread(self.apply(d, self.weight), spread, self.fan_in(), fuse)
        # W·Δx is the difference of the layer's own outputs (the bias cancels): no second op
        return split_by_spread_of(state.x_rows(self.name), state.r_broadcast(self.name), spread,
                                  self.fan_in(), fuse, into_x=state.values_to_lose(self.name))

    def fan_in(self) -> int:
        """How many terms each output sums (bounds the rounding error of the split)."""
        return int(self.weight[0].numel())

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        t = m_pos.shape[0]
        in_shape = state.pair_shape(self.inputs[0], t * m_pos.shape[1])[0]
        if m_neg is None:
            m = self.apply_transpose(flat_targets(m_pos), self.weight, in_shape)
            return [(unflat_targets(m, t), None)]
        # the halves on the multipliers, not the weights (exact either way: a power of two);
        # the weights are the larger tensor for a dense layer
        mean = self.apply_transpose(flat_targets((m_pos + m_neg).mul_(0.5)), self.weight, in_shape)
        half_diff = self.apply_transpose(flat_targets((m_pos - m_neg).mul_(0.5)), self.weight.abs(),
                                         in_shape)
        sign = state.cached(self, "input_sign", lambda: torch.sign(state.delta(self.inputs[0])))
        # (in place: every apply_transpose returns a tensor of its own)
        return [(unflat_targets(mean, t).addcmul_(sign, unflat_targets(half_diff, t)), None)]

    def rereads_values(self, state: State) -> bool:
        return False  # the sign of its input's Δx is cached

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        # one multiplier per unit: the transposed map alone; two: also the sign of its input's Δx
        return (self.inputs[0],) if paired else ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return (self.inputs[0], self.name), ()  # |W|·|Δx| and its own W·Δx


class SignedScale(Layer):
    """``y = a·x + b`` elementwise with a fixed ``a`` that may be negative (batch norm, scalar
    multiplication, negation). A negative ``a`` swaps the positive and negative parts."""

    #: its split is new tensors; its backward reads only ``a``
    hands_over_split = True

    def scale(self, ndim: int) -> Tensor:
        """The factor ``a``, shaped to broadcast against a per-pair tensor of rank ``ndim``."""
        raise NotImplementedError

    def split(self, state: State) -> Split:
        p, n = state.split(self.inputs[0])
        return _scaled_parts(self.scale(p.ndim), p, n)

    def rereads_values(self, state: State) -> bool:
        return False

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        return ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return (), (self.inputs[0],)

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        a = self.scale(m_pos.ndim - 1)
        if m_neg is None:
            return [(m_pos * a, None)]
        return [_scaled_parts(a, m_pos, m_neg)]


def _scaled_parts(a: Tensor, p: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """``(a⁺p + a⁻n, a⁺n + a⁻p)``: each part times ``a``, the two swapped where ``a < 0``. The
    factor is per channel, so mostly of one sign (a batch norm's usually positive): then two
    products, else each element picks its part before one product (never four products and
    two sums over activation-sized tensors)."""
    low, high = torch.aminmax(a)
    if low >= 0:
        return p * a, n * a
    if high <= 0:
        return n * a, p * a
    flips = a < 0
    return torch.where(flips, n, p).mul_(a), torch.where(flips, p, n).mul_(a)


class PerPairLinearMap(Layer):
    """A layer whose DeepLIFT rule is a linear map ``M`` of each (example, reference) pair with
    ``M·Δx = Δy`` (softmax, log-softmax, logsumexp, normalisations: built from Rescale and
    Shapley steps). Both parts of the split go through ``M`` and both multipliers through
    ``Mᵀ``, which keeps summation-to-delta; for gradient methods ``M`` is the Jacobian.
    Subclasses give ``_apply(state, v)`` and ``_apply_transpose(state, m)``."""

    def _apply(self, state: State, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _apply_transpose(self, state: State, m: Tensor) -> Tensor:
        raise NotImplementedError

    def split(self, state: State) -> Split:
        p, n = state.split(self.inputs[0])
        return self._apply(state, p), self._apply(state, n)

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return [(self._apply_transpose(state, m_pos),
                 None if m_neg is None else self._apply_transpose(state, m_neg))]
