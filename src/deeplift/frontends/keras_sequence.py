"""Keras handlers for sequence layers and resampling (issue 9): ``LSTM``, ``GRU`` and
``Bidirectional`` (unrolled into their gates by the same code as PyTorch's, see
``torch_recurrent.Unroller``), ``Embedding`` of integer tokens, ``UpSampling1D/2D``.

Each handler is ``(converter, keras_layer, name, inputs) -> name of the visible layer``, like the
methods of ``keras._Converter``; ``keras.py`` merges ``SEQUENCE_HANDLERS`` into its table. The
Keras weights are turned into PyTorch's layout (gates i, f, g, o for an LSTM — Keras' own order —
and r, z, n for a GRU, whose Keras order is z, r, h).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UnsupportedLayerError
from ..layers.embedding import Embedding
from ..layers.linear import ScalarMul
from ..layers.merge import Add, Concat, Mul
from ..layers.shape import Identity
from ..layers.structure import Upsample
from .torch_recurrent import Unroller


def _refuse(layer, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"layer {layer.name!r} ({layer.class_name}): {why}")


def _check_cell(layer, cfg: dict, kind: str) -> None:
    if cfg.get("activation", "tanh") != "tanh" or cfg.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise _refuse(layer, "only activation='tanh' and recurrent_activation='sigmoid' are supported")
    if cfg.get("stateful") or cfg.get("return_state"):
        raise _refuse(layer, "stateful layers and return_state are not supported")
    if kind == "GRU" and not cfg.get("reset_after", True):
        raise _refuse(layer, "reset_after=False (the Keras 2 GRU variant) has no rule yet")


def _torch_layout(conv, kind: str, kernel, recurrent, bias, units: int):
    """Keras (kernel, recurrent_kernel, bias) -> PyTorch's (w_ih, w_hh, b_ih, b_hh)."""
    kernel, recurrent = np.asarray(kernel), np.asarray(recurrent)
    gates = 4 if kind == "LSTM" else 3
    if bias is None:
        bias = np.zeros((gates * units,) if kind == "LSTM" else (2, gates * units), kernel.dtype)
    bias = np.asarray(bias)
    if kind == "LSTM":
        b_ih, b_hh = bias, np.zeros_like(bias)
        order = np.arange(gates * units)
    else:
        b_ih, b_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
        h = units
        order = np.concatenate([np.arange(h, 2 * h), np.arange(0, h), np.arange(2 * h, 3 * h)])
    return (conv._t(kernel.T[order]), conv._t(recurrent.T[order]), conv._t(b_ih[order]),
            conv._t(b_hh[order]))


def _unroller(conv, name: str, kind: str) -> Unroller:
    return Unroller(lambda layer, ins, tag: conv._emit(layer, f"{name}/{tag}", ins, auxiliary=True), kind)


def _length(conv, layer, x: str) -> int:
    shape = conv.shape(x)
    if len(shape) != 2 or shape[0] is None:
        raise _refuse(layer, f"needs a (N, time, features) input of fixed length, got {('N', *shape)}")
    return int(shape[0])


def _run(conv, layer, cfg: dict, kind: str, x: str, name: str, weights: tuple, backwards: bool,
         tag: str) -> tuple[list, Any]:
    _check_cell(layer, cfg, kind)
    length = _length(conv, layer, x)
    units = int(cfg["units"])
    w = _torch_layout(conv, kind, *weights, units)
    steps = range(length - 1, -1, -1) if backwards else range(length)
    u = _unroller(conv, name, kind)
    hs, last = u.direction(x, *w, steps, tag)
    return hs, last[0], u


def recurrent(conv, layer, name, inputs):
    """``LSTM``/``GRU``: the last state, or with ``return_sequences`` every state in the order
    processed (reversed in time for ``go_backwards``, as Keras returns it)."""
    x = conv._one_input(layer, inputs)
    cfg, w = layer.config, layer.weights
    kind = layer.class_name
    bias = w.get("bias") if cfg.get("use_bias", True) else None
    hs, last, u = _run(conv, layer, cfg, kind, x, name, (w["kernel"], w["recurrent_kernel"], bias),
                       bool(cfg.get("go_backwards")), "cell")
    out = u.stack([h for _, h in hs], "seq") if cfg.get("return_sequences") else last
    return conv._emit(Identity(), name, [out])


def bidirectional(conv, layer, name, inputs):
    """``Bidirectional(LSTM|GRU)``: both directions' outputs in time order, merged."""
    x = conv._one_input(layer, inputs)
    cfg, w = layer.config, layer.weights
    inner = cfg.get("layer") if isinstance(cfg.get("layer"), dict) else {}
    kind, icfg = inner.get("class_name"), inner.get("config", {})
    if kind not in ("LSTM", "GRU"):
        raise _refuse(layer, f"Bidirectional({kind}) has no rule; LSTM and GRU do")
    use_bias = icfg.get("use_bias", True)
    outs = []
    for d, suffix in enumerate(("", "_1")):
        weights = (w["kernel" + suffix], w["recurrent_kernel" + suffix], w["bias" + suffix] if use_bias else None)
        backwards = bool(icfg.get("go_backwards")) != bool(d)
        hs, last, u = _run(conv, layer, icfg, kind, x, name, weights, backwards, "bwd" if d else "fwd")
        if icfg.get("return_sequences"):
            outs.append(u.stack([h for _, h in sorted(hs, key=lambda th: th[0])], "bwd.seq" if d else "fwd.seq"))
        else:
            outs.append(last)
    mode = cfg.get("merge_mode", "concat")
    if mode == "concat":
        return conv._emit(Concat(-1), name, outs)
    if mode == "sum":
        return conv._emit(Add(), name, outs)
    if mode == "mul":
        return conv._emit(Mul(), name, outs)
    if mode == "ave":
        total = conv._emit(Add(), f"{name}/sum", outs, auxiliary=True)
        return conv._emit(ScalarMul(torch.tensor(0.5, dtype=conv.dtype)), name, [total])
    raise _refuse(layer, f"merge_mode={mode!r} is not supported (concat, sum, mul, ave are)")


def embedding(conv, layer, name, inputs):
    x = conv._one_input(layer, inputs)
    if layer.config.get("mask_zero"):
        raise _refuse(layer, "mask_zero=True (masks are not propagated)")
    return conv._emit(Embedding(conv._t(layer.weights["embeddings"])), name, [x])


def upsampling(conv, layer, name, inputs):
    """``UpSampling1D`` (repeat each step ``size`` times) and ``UpSampling2D`` (nearest or
    bilinear): the channels-first :class:`Upsample` inside the layout permutes."""
    x = conv._one_input(layer, inputs)
    nd = int(layer.class_name[-2])
    cfg = layer.config
    if nd == 1:
        channels_last, spatial = True, [conv.shape(x)[0]]
        factors = [int(cfg.get("size", 2))]
    else:
        channels_last, spatial = conv._spatial(layer, x, nd)
        size = cfg.get("size", 2)
        factors = [int(size)] * nd if isinstance(size, int) else [int(s) for s in size]
    if any(s is None for s in spatial):
        raise _refuse(layer, "needs fixed spatial sizes")
    mode = str(cfg.get("interpolation", "nearest"))
    if mode not in ("nearest", "bilinear"):
        raise _refuse(layer, f"interpolation={mode!r} has no rule (nearest and bilinear do)")
    up = Upsample([s * f for s, f in zip(spatial, factors)], mode, align_corners=False)
    return conv._chain(name, [x], [(up, "cf")], nd, channels_last)


SEQUENCE_HANDLERS = {
    "LSTM": recurrent, "GRU": recurrent, "Bidirectional": bidirectional,
    "Embedding": embedding,
    "UpSampling1D": upsampling, "UpSampling2D": upsampling,
}
