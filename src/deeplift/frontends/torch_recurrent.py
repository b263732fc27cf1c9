"""``nn.LSTM`` / ``nn.GRU`` (``aten.lstm`` / ``aten.gru``) unrolled over time into their gates.

Each step is built from layers that already have exact rules — dense maps, slices, sigmoid/tanh
(Rescale / RevealCancel) and elementwise products (the two-factor Shapley rule of ``Mul``) — so
the recurrent network needs no rule of its own and sums to delta like any other graph. The input
projections of all time steps are one dense layer; the recurrent ones run step by step. Any
number of layers, either direction; the initial state must be zero (PyTorch's default).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import UnsupportedLayerError
from ..layers.activations import Sigmoid, Tanh
from ..layers.linear import Dense, ScalarMul
from ..layers.merge import Add, Concat, Mul, Sub
from ..layers.shape import Select, Slice, Unsqueeze


class StackedStates:
    """``h_n``/``c_n``: (layers·directions, N, H), batch on axis 1. Only whole rows (``h_n[-1]``,
    ``h_n[i]``) are layers; anything else is refused when used."""

    def __init__(self, rows: list, what: str) -> None:
        self.rows, self.what = rows, what


class Unroller:
    """Builds the gates of one recurrent layer with ``add(layer, inputs, tag)`` (whatever the
    front end uses to emit a layer; it returns the reference later layers take as input)."""

    def __init__(self, add: Callable, kind: str) -> None:
        self._add, self.kind = add, kind

    def add(self, layer, inputs: Sequence, tag: str):
        return self._add(layer, list(inputs), tag)

    def stack(self, hs: list, tag: str):
        """(N, H) states -> (N, T, H) in the given order."""
        ordered = [self.add(Unsqueeze(1), [h], f"{tag}.h{k}") for k, h in enumerate(hs)]
        return ordered[0] if len(ordered) == 1 else self.add(Concat(1), ordered, f"{tag}.seq")

    def direction(self, x, w_ih, w_hh, b_ih, b_hh, steps, tag):
        """Run over ``steps`` (time indices in processing order) with PyTorch's weight layout
        (gates i, f, g, o for an LSTM; r, z, n for a GRU); returns [(t, h_t)] in processing order
        and the final state(s)."""
        hidden = w_hh.shape[1]
        if self.kind == "LSTM":
            proj = self.add(Dense(w_ih, b_ih + b_hh), [x], f"{tag}.x")
        else:  # GRU: the recurrent biases of r and z add like the input ones; b_hn sits inside r·(...)
            b = b_ih.clone()
            b[:2 * hidden] += b_hh[:2 * hidden]
            proj = self.add(Dense(w_ih, b), [x], f"{tag}.x")
        h = cell = None
        seq = []
        for t in steps:
            gx = self.add(Select(1, t), [proj], f"{tag}.t{t}.x")
            if self.kind == "LSTM":
                h, cell = self._lstm_step(gx, h, cell, w_hh, hidden, f"{tag}.t{t}")
            else:
                h = self._gru_step(gx, h, w_hh, b_hh, hidden, f"{tag}.t{t}")
            seq.append((t, h))
        return seq, ([h, cell] if self.kind == "LSTM" else [h])

    def _gate(self, gates, k: int, hidden: int, act, tag: str):
        part = self.add(Slice(1, k * hidden, (k + 1) * hidden), [gates], f"{tag}.pre")
        return self.add(act, [part], tag)

    def _lstm_step(self, gx, h, cell, w_hh, hidden, tag):
        gates = gx if h is None else self.add(Add(), [gx, self.add(Dense(w_hh), [h], f"{tag}.hh")], f"{tag}.gates")
        i = self._gate(gates, 0, hidden, Sigmoid(), f"{tag}.i")
        g = self._gate(gates, 2, hidden, Tanh(), f"{tag}.g")
        o = self._gate(gates, 3, hidden, Sigmoid(), f"{tag}.o")
        new_cell = self.add(Mul(), [i, g], f"{tag}.ig")
        if cell is not None:
            f = self._gate(gates, 1, hidden, Sigmoid(), f"{tag}.f")
            new_cell = self.add(Add(), [self.add(Mul(), [f, cell], f"{tag}.fc"), new_cell], f"{tag}.c")
        new_h = self.add(Mul(), [o, self.add(Tanh(), [new_cell], f"{tag}.tanh_c")], f"{tag}.h_t")
        return new_h, new_cell

    def _gru_step(self, gx, h, w_hh, b_hh, hidden, tag):
        b_hn = b_hh[2 * hidden:]
        if h is None:  # h = 0: the recurrent term is its bias alone
            rz = self.add(Slice(1, 0, 2 * hidden), [gx], f"{tag}.rz_pre")
            hn = None
        else:
            bias = torch.zeros_like(b_hh)
            bias[2 * hidden:] = b_hn
            gh = self.add(Dense(w_hh, bias), [h], f"{tag}.hh")
            rz = self.add(Add(), [self.add(Slice(1, 0, 2 * hidden), [gx], f"{tag}.rzx"),
                                  self.add(Slice(1, 0, 2 * hidden), [gh], f"{tag}.rzh")], f"{tag}.rz_pre")
            hn = self.add(Slice(1, 2 * hidden, 3 * hidden), [gh], f"{tag}.hn")
        rz = self.add(Sigmoid(), [rz], f"{tag}.rz")
        r = self.add(Slice(1, 0, hidden), [rz], f"{tag}.r")
        z = self.add(Slice(1, hidden, 2 * hidden), [rz], f"{tag}.z")
        r_hn = self.add(ScalarMul(b_hn), [r], f"{tag}.rhn") if hn is None else self.add(Mul(), [r, hn], f"{tag}.rhn")
        xn = self.add(Slice(1, 2 * hidden, 3 * hidden), [gx], f"{tag}.xn")
        n = self.add(Tanh(), [self.add(Add(), [xn, r_hn], f"{tag}.n_pre")], f"{tag}.n")
        # h' = (1 − z)·n + z·h = n + z·(h − n)
        diff = (self.add(ScalarMul(torch.tensor(-1.0, dtype=b_hh.dtype)), [n], f"{tag}.minus_n") if h is None
                else self.add(Sub(), [h, n], f"{tag}.h_minus_n"))
        return self.add(Add(), [n, self.add(Mul(), [z, diff], f"{tag}.zd")], f"{tag}.h_t")


class _TorchUnroller(Unroller):
    def __init__(self, c, node, kind: str, length_axis: int = 1) -> None:
        super().__init__(lambda layer, inputs, tag: c.add(layer, node, inputs, suffix=tag), kind)
        self.c, self.node = c, node
        self.length_axis = length_axis  # of the exported input: 0 when it was fed time-first

    def run(self, a: dict) -> tuple:
        c, node = self.c, self.node
        if not a.get("batch_first"):
            raise UnsupportedLayerError(f"{self.kind} with batch_first=False ({c.where(node)}) on a "
                                        "tensor that is not a batch-first one transposed (x.transpose(0, 1) "
                                        "or x.permute(1, 0, 2)); deeplift keeps the batch axis first")
        if a.get("train") and a.get("dropout"):
            raise UnsupportedLayerError(f"{self.kind} in training mode ({c.where(node)}); call model.eval()")
        self._zero_state(a["hx"])
        params = [c.need_constant(p, f"the {self.kind} weights", node) for p in a["params"]]
        dirs = 2 if a["bidirectional"] else 1
        per = 4 if a["has_biases"] else 2
        if len(params) != per * dirs * a["num_layers"]:
            raise UnsupportedLayerError(f"{self.kind} ({c.where(node)}) with projections (proj_size) "
                                        "has no rule yet")
        x = a["input"]
        length = int(node.args[0].meta["val"].shape[self.length_axis])
        finals: list[list] = [[], []]
        for layer in range(a["num_layers"]):
            outs = []
            for d in range(dirs):
                p = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
                w_ih, w_hh = p[0], p[1]
                b_ih = p[2] if per == 4 else torch.zeros(w_ih.shape[0], dtype=w_ih.dtype)
                b_hh = p[3] if per == 4 else torch.zeros(w_hh.shape[0], dtype=w_hh.dtype)
                tag = f"l{layer}{'r' if d else ''}"
                steps = range(length - 1, -1, -1) if d else range(length)
                hs, last = self.direction(x, w_ih, w_hh, b_ih, b_hh, steps, tag)
                outs.append(self.stack([h for _, h in sorted(hs, key=lambda th: th[0])], tag))
                for k, state in enumerate(last):
                    finals[k].append(state)
            x = outs[0] if dirs == 1 else self.add(Concat(2), outs, f"{tag}.out")
        if self.kind == "LSTM":
            return x, StackedStates(finals[0], "h_n"), StackedStates(finals[1], "c_n")
        return x, StackedStates(finals[0], "h_n")

    def _zero_state(self, hx: Any) -> None:
        for h in (hx if isinstance(hx, (list, tuple)) else [hx]):
            if h is None:
                continue
            value = self.c.constant_value(h)
            if value is None or bool(value.any()):
                raise UnsupportedLayerError(f"{self.kind} with a non-zero initial state ({self.c.where(self.node)}) "
                                            "has no rule yet; pass no initial state")


def lstm(c, node, a, length_axis: int = 1):
    return _TorchUnroller(c, node, "LSTM", length_axis).run(a)


def gru(c, node, a, length_axis: int = 1):
    return _TorchUnroller(c, node, "GRU", length_axis).run(a)


def select_row(c, node, value: StackedStates, dim: int, index: int):
    """``h_n[i]`` / ``h_n.select(0, i)``: the final state of one layer and direction."""
    if dim != 0:
        raise UnsupportedLayerError(f"the {value.what} of a recurrent layer ({c.where(node)}) is used "
                                    "other than by whole rows (h_n[i])")
    return value.rows[index]


RECURRENT_OPS = {torch.ops.aten.lstm: lstm, torch.ops.aten.gru: gru}
