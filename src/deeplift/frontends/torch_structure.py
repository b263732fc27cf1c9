"""PyTorch op rules for structure ops, embeddings, upsampling and transposed convolution (issue 9).

Kept apart from ``torch.py``'s table so each family can be read alone; ``torch.py`` merges
``STRUCTURE_OPS`` into its op table. A rule is ``(capture, node, bound arguments) -> layer
reference``; it reads shapes from the exported node's ``meta["val"]`` (its non-batch sizes are
concrete) and builds layers with ``capture.add``. This module does not import ``torch.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import math

import torch
from torch import Tensor

from ..errors import UnsupportedLayerError
from ..layers.embedding import Embedding
from ..layers.linear import ScalarMul
from ..layers.merge import Add
from ..layers.shape import Identity, Permute, Reshape, Select
from ..layers.structure import Expand, Repeat, Roll, Upsample
from ..layers.transposed import ConvTranspose
from .torch_recurrent import RECURRENT_OPS

aten = torch.ops.aten


def out_shape(node) -> tuple[int, ...]:
    """The non-batch output sizes of an exported node."""
    return tuple(int(s) for s in node.meta["val"].shape[1:])


class BatchMoved:
    """``x.permute(dims)`` that moves the batch axis (``dims[0] != 0``), kept pending: attention
    code does ``qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)`` and then takes ``q, k, v`` with
    ``unbind(0)`` / ``[i]``, after which the batch axis is first again. Only such whole-row
    selections along the new leading axis are accepted."""

    def __init__(self, source, dims: tuple[int, ...], fold: int = 0) -> None:
        self.source, self.dims = source, dims
        self.fold = fold  # > 0: the source is a folded value's layer (see Folded)

    def row(self, c, node, index: int):
        """``permuted[index]`` = ``x.select(dims[0], index)`` permuted by the remaining dims."""
        axis = self.dims[0]
        rest = [d - (d > axis) for d in self.dims[1:]]
        if rest[0] != 0:
            raise UnsupportedLayerError(f"permute {list(self.dims)} ({c.where(node)}) leaves the batch "
                                        "axis away from the front")
        out = c.add(Select(axis, int(index)), node, [self.source], suffix=f"row{index}")
        if rest != sorted(rest):
            out = c.add(Permute(rest), node, [out])
        return Folded(out, self.fold) if self.fold else out


def moved(c, node, source, dims: tuple[int, ...]):
    """``source`` permuted by ``dims``: a layer when the batch axis stays first, else pending."""
    if dims[0] != 0:
        return BatchMoved(source, dims)
    if list(dims) == sorted(dims):
        return c.add(Identity(), node, [source])
    return c.add(Permute(dims), node, [source])


def pending_use(c, node, value, target, bound: dict):
    """A pending value (:class:`BatchMoved`) used by ``node``: a row of it, all rows (unbind), a
    further permute/transpose, or the time-first input of ``nn.LSTM``/``nn.GRU``."""
    packet = getattr(target, "overloadpacket", target)
    if packet is aten.select and bound.get("dim") == 0:
        return value.row(c, node, bound["index"] % value_length(node))
    if packet is aten.unbind and bound.get("dim", 0) == 0:
        return [value.row(c, node, i) for i in range(value_length(node))]
    if packet in (aten.permute, aten.transpose) and bound.get("self") is value:
        dims = _permute_dims(node, bound)
        return moved(c, node, value.source, tuple(value.dims[d] for d in dims))
    if (packet in RECURRENT_OPS and bound.get("input") is value and not bound.get("batch_first")
            and len(value.dims) == 3 and value.dims[1] == 0):  # a time-first LSTM/GRU input
        batch_first = moved(c, node, value.source, (0, value.dims[0], value.dims[2]))
        out = RECURRENT_OPS[packet](c, node, {**bound, "input": batch_first, "batch_first": True},
                                    length_axis=0)
        return (BatchMoved(out[0], (1, 0, 2)), *out[1:])
    raise UnsupportedLayerError(f"a permute that moves the batch axis is used by {packet} "
                                f"({c.where(node)}); only whole rows along its first axis "
                                "(unbind(0), x[i]) bring the batch axis back to the front")


class Folded:
    """A value the model computes as ``(B·F, *rest)`` — other axes folded into the batch axis, as
    window attention does (Swin's ``view(-1, ws·ws, C)``) — kept as a layer of shape
    ``(B, F, *rest)``, so the batch axis stays first. Ops on trailing axes apply to that layer
    unchanged; reshapes move between folds; permutes translate their axes."""

    def __init__(self, ref, fold: int) -> None:
        self.ref, self.fold = ref, int(fold)


#: ops that act on trailing axes only, treating every leading axis as a batch axis
TRAILING = {aten.linear, aten.dropout, aten.gelu, aten.relu, aten.silu, aten.sigmoid, aten.tanh,
            aten.mul, aten.div, aten.add, aten.sub, aten.matmul, aten.layer_norm, aten.contiguous,
            aten.clone, aten.alias, aten.softmax, aten._softmax, aten.log_softmax}


def _rest(node_arg) -> tuple[int, ...]:
    return tuple(int(s) for s in node_arg.meta["val"].shape[1:])


def fold_reshape(c, node, source, fold: int, in_rest: tuple[int, ...], shape: list):
    """``reshape`` of a value (folded ``fold`` times; 1: a plain layer) to ``shape``, whose first
    entry is -1 or a multiple of the batch size: a layer, or a :class:`Folded` value."""
    first, rest = shape[0], list(shape[1:])
    if any(not isinstance(s, int) for s in rest):
        raise UnsupportedLayerError(f"reshape to {shape} ({c.where(node)}) uses the batch size in a non-batch axis")
    total = fold * math.prod(in_rest)  # elements per example
    multiple = None if first == -1 else c.batch_multiple(first)
    if first != -1 and multiple is None:
        raise UnsupportedLayerError(f"reshape to {shape} ({c.where(node)}) does not keep the batch axis first")
    if -1 in rest:
        if multiple is None:
            raise UnsupportedLayerError(f"reshape to {shape} ({c.where(node)}) leaves two sizes open")
        rest[rest.index(-1)] = total // (multiple * math.prod(s for s in rest if s != -1))
    new_fold = total // max(math.prod(rest), 1)
    if new_fold * math.prod(rest) != total or (multiple is not None and new_fold != multiple):
        raise UnsupportedLayerError(f"reshape to {shape} ({c.where(node)}) does not keep whole examples")
    out = c.add(Reshape((new_fold, *rest) if new_fold > 1 else rest), node, [source])
    return Folded(out, new_fold) if new_fold > 1 else out


def fold_use(c, node, value: Folded, target, args: list, kwargs: dict, rule_for):
    """An op reading a :class:`Folded` value."""
    packet = getattr(target, "overloadpacket", target)
    if packet in (aten.view, aten.reshape, aten._unsafe_view):
        shape = list(kwargs.get("size", kwargs.get("shape", args[1] if len(args) > 1 else None)))
        return fold_reshape(c, node, value.ref, value.fold, _rest(node.args[0]), shape)
    if packet in (aten.permute, aten.transpose):
        bound = {"self": value, **({"dims": args[1]} if packet is aten.permute else
                                   {"dim0": args[1], "dim1": args[2]})}
        dims = _permute_dims(node, bound)
        actual = []
        for d in dims:
            actual += [0, 1] if d == 0 else [d + 1]
        actual = tuple(actual)
        if actual[:2] == (0, 1):
            out = moved(c, node, value.ref, actual)
            return Folded(out, value.fold)
        if actual.index(1) != actual.index(0) + 1:
            raise UnsupportedLayerError(f"permute {list(dims)} ({c.where(node)}) splits folded axes")
        return BatchMoved(value.ref, actual, fold=value.fold)
    if packet is aten.slice and (args[1] if len(args) > 1 else 0) == 0:
        return value
    if packet in TRAILING:
        folds = {a.fold for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, Folded)}
        if len(folds) != 1:
            raise UnsupportedLayerError(f"{packet} ({c.where(node)}) of values folded differently")
        for a in _flat(args) + _flat(list(kwargs.values())):
            if isinstance(a, Tensor) and a.ndim >= _rest(node.args[0]).__len__() + 1 and a.shape[0] != 1:
                raise UnsupportedLayerError(f"{packet} ({c.where(node)}) broadcasts a constant over "
                                            "the axes folded into the batch axis")
        if packet in (aten.softmax, aten._softmax, aten.log_softmax) and int(args[1]) >= 0:
            args = [args[0], int(args[1]) + 1, *args[2:]]
        unfold = lambda v: v.ref if isinstance(v, Folded) else (  # noqa: E731
            type(v)(unfold(x) for x in v) if isinstance(v, (list, tuple)) else v)
        rule = rule_for(target)
        out = rule(c, node, c.bind(target, [unfold(a) for a in args], {k: unfold(v) for k, v in kwargs.items()}))
        return Folded(out, folds.pop())
    raise UnsupportedLayerError(f"{packet} ({c.where(node)}) on a value with other axes folded into "
                                "the batch axis (window attention) has no rule")


def _flat(v: list) -> list:
    out = []
    for a in v:
        out.extend(_flat(list(a)) if isinstance(a, (list, tuple)) else [a])
    return out


def value_length(node) -> int:
    return int(node.args[0].meta["val"].shape[0])


def _permute_dims(node, a) -> tuple[int, ...]:
    ndim = node.args[0].meta["val"].ndim
    if "dims" in a:
        return tuple(int(d) % ndim for d in a["dims"])
    dims = list(range(ndim))
    d0, d1 = a["dim0"] % ndim, a["dim1"] % ndim
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return tuple(dims)


def _permute(c, node, a):
    """``permute``/``transpose``; one that moves the batch axis stays pending (:class:`BatchMoved`)."""
    return moved(c, node, a["self"], _permute_dims(node, a))


def fold_view(c, node, a):
    """``view``/``reshape`` that folds other axes into the batch axis (``view(-1, ws·ws, C)`` of
    window attention) as a :class:`Folded` value; None for a plain reshape of the example."""
    shape = list(a.get("size", a.get("shape")))
    first = shape[0] if shape else None
    in_rest = _rest(node.args[0])
    plain_rest = all(isinstance(s, int) for s in shape[1:]) and -1 not in shape[1:]
    folds = (not isinstance(first, int) and c.batch_multiple(first) not in (None, 1)) or (
        first == -1 and plain_rest and math.prod(shape[1:]) != math.prod(in_rest))
    return fold_reshape(c, node, a["self"], 1, in_rest, shape) if folds else None


def _roll(c, node, a):
    shifts, dims = a["shifts"], a.get("dims") or []
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims:
        raise UnsupportedLayerError(f"roll without dims ({c.where(node)}) rolls the flattened batch")
    return c.add(Roll(shifts, dims), node, [a["self"]])


def _unflatten(c, node, a):
    ndim = node.args[0].meta["val"].ndim
    if a["dim"] % ndim == 0:
        raise UnsupportedLayerError(f"unflatten of the batch axis ({c.where(node)}) mixes examples")
    return c.add(Reshape(out_shape(node)), node, [a["self"]])


def _expand(c, node, a):
    size = list(a["size"])
    first = size[0]
    if not (c.is_batch_size(first) or first in (-1, c.batch_size)) or len(size) < node.args[0].meta["val"].ndim:
        raise UnsupportedLayerError(f"expand to {size} ({c.where(node)}) does not keep the batch axis first")
    return c.add(Expand(out_shape(node)), node, [a["self"]])


def _repeat(c, node, a):
    repeats = list(a["repeats"])
    if len(repeats) != node.args[0].meta["val"].ndim or repeats[0] != 1:
        raise UnsupportedLayerError(f"repeat {repeats} ({c.where(node)}) repeats along the batch axis")
    return c.add(Repeat(repeats[1:]), node, [a["self"]])


def _upsample(mode: str):
    def rule(c, node, a):
        if node.args[0].meta["val"].ndim < 3:
            raise UnsupportedLayerError(f"upsampling ({c.where(node)}) needs (N, C, *spatial) input")
        size = tuple(int(s) for s in node.meta["val"].shape[2:])
        return c.add(Upsample(size, mode, a.get("align_corners")), node, [a["input"] if "input" in a else a["self"]])
    return rule


def _conv_transpose(c, node, a):
    w = c.need_constant(a["weight"], "the weight", node)
    b = c.need_constant(a.get("bias"), "the bias", node)
    return c.add(ConvTranspose(w, b, list(a["stride"]), list(a["padding"]), list(a["output_padding"]),
                               a["groups"], list(a["dilation"])), node, [a["input"]])


def conv_transposed(c, node, a):
    """``aten.convolution`` with ``transposed=True`` (``torch.py``'s ``_conv`` hands it here)."""
    return _conv_transpose(c, node, a)


def _embedding(c, node, a):
    w = c.need_constant(a["weight"], "the embedding table", node)
    if not c.is_layer(a["indices"]):
        raise UnsupportedLayerError(f"embedding ({c.where(node)}) of constant indices")
    return c.add(Embedding(w), node, [a["indices"]])


def _masked_fill(c, node, a):
    """``x.masked_fill(mask, value)`` with a constant mask: ``x·(1−mask) + value·mask``."""
    x, mask, value = a["self"], a["mask"], a["value"]
    if not c.is_layer(x):
        raise UnsupportedLayerError(f"masked_fill ({c.where(node)}) of a constant with a mask that "
                                    "depends on the inputs has no DeepLIFT rule")
    if not isinstance(mask, Tensor):
        raise UnsupportedLayerError(f"masked_fill ({c.where(node)}) with a mask that depends on the "
                                    "inputs has no DeepLIFT rule (only constant masks)")
    if isinstance(value, Tensor):
        if c.is_layer(value):
            raise UnsupportedLayerError(f"masked_fill ({c.where(node)}) with a fill value that depends "
                                        "on the inputs has no DeepLIFT rule")
        value = float(value)
    dtype = node.meta["val"].dtype
    if value in (float("inf"), float("-inf")):  # an infinite fill has no finite difference to
        value = torch.finfo(dtype).max if value > 0 else torch.finfo(dtype).min  # split: clamp it
    keep = ScalarMul((~mask.bool()).to(dtype))
    kept = c.add(keep, node, [x], suffix="keep")
    filled = torch.zeros(mask.shape, dtype=dtype).masked_fill(mask.bool(), float(value))
    return c.add(Add(), node, [kept, c.as_layer(filled, node)])


#: ops whose result depends on their tensor arguments' shapes (and dtypes) only, never on values:
#: with a layer argument they are still constants (per example), folded like any other constant
SHAPE_ONLY = {aten.new_zeros, aten.new_ones, aten.new_full, aten.new_empty, aten.zeros_like,
              aten.ones_like, aten.full_like, aten.empty_like}


def _no_op(c, node, a):
    """A runtime check with no value (``x.to(device)`` records ``_assert_tensor_metadata``)."""
    return None


#: ops that broadcast their tensor arguments against each other: a constant repeated for every
#: example enters them with a batch axis of 1 (an attention mask, a bias), not as a layer
BROADCASTING = {aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub, aten.mul, aten.mul_, aten.div,
                aten.div_, aten.where, aten.masked_fill, aten.masked_fill_,
                aten.scaled_dot_product_attention}


STRUCTURE_OPS: dict[Any, Callable[..., Any]] = {
    aten._assert_tensor_metadata: _no_op,
    aten.roll: _roll,
    aten.permute: _permute, aten.transpose: _permute,
    aten.unflatten: _unflatten,
    aten.expand: _expand,
    aten.repeat: _repeat,
    aten.upsample_nearest1d: _upsample("nearest"), aten.upsample_nearest2d: _upsample("nearest"),
    aten.upsample_nearest3d: _upsample("nearest"),
    aten._upsample_nearest_exact1d: _upsample("nearest-exact"),
    aten._upsample_nearest_exact2d: _upsample("nearest-exact"),
    aten.upsample_linear1d: _upsample("linear"), aten.upsample_bilinear2d: _upsample("bilinear"),
    aten.upsample_trilinear3d: _upsample("trilinear"),
    aten.conv_transpose1d: _conv_transpose, aten.conv_transpose2d: _conv_transpose,
    aten.conv_transpose3d: _conv_transpose,
    aten.embedding: _embedding,
    aten.masked_fill: _masked_fill, aten.masked_fill_: _masked_fill,
}


