"""The intermediate representation: a Model is a DAG of named layers with ordered inputs."""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from typing import Iterable, Sequence

import torch
from torch import Tensor

from .arrays import prepare_forward_inputs
from .errors import InputError
from .layers.base import Constant, Input, Layer

#: guards ``Model.rows_forwarded`` (a counter shared by every thread scoring the model)
_ROWS_LOCK = threading.Lock()


class Model:
    """A DAG of DeepLIFT layers, kept in topological order.

    ``inputs`` are the names of the :class:`Input` layers in the order the model is called with;
    ``outputs`` the names of the layers whose values the model returns (default: layers that no
    other layer consumes).
    """

    def __init__(self, layers: Iterable[Layer], inputs: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, name: str | None = None) -> None:
        layers = list(layers)
        _name_unnamed(layers)
        by_name: dict[str, Layer] = {}
        for layer in layers:
            if layer.name in by_name:
                raise ValueError(f"two layers are named {layer.name!r}")
            by_name[layer.name] = layer
        for layer in layers:
            for i in layer.inputs:
                if i not in by_name:
                    raise ValueError(f"layer {layer.name!r} takes input {i!r}, which is not in the model")
        self.name = name
        self.layers: dict[str, Layer] = {n: by_name[n] for n in _topological_order(by_name)}
        self.input_names = list(inputs) if inputs is not None else [
            n for n, l in self.layers.items() if isinstance(l, Input)]
        for n in self.input_names:
            if not isinstance(self.layers.get(n), Input):
                raise ValueError(f"{n!r} is not an Input layer of the model")
        consumed = {i for l in self.layers.values() for i in l.inputs}
        self.output_names = list(outputs) if outputs is not None else [
            n for n in self.layers if n not in consumed and not isinstance(self.layers[n], (Input, Constant))]
        #: rows pushed through the forward pass so far (examples + references); lets tests and
        #: benchmarks check that work is not repeated
        self.rows_forwarded = 0
        #: layer output shapes per example shape of the inputs (see ``layer_shapes``)
        self._shapes: dict[tuple, dict[str, tuple]] = {}
        self._consumers: dict[str, list[str]] = {n: [] for n in self.layers}
        for n, l in self.layers.items():
            for i in l.inputs:
                if n not in self._consumers[i]:
                    self._consumers[i].append(n)

    @classmethod
    def from_output_layers(cls, outputs: "Layer | Sequence[Layer]", **kwargs) -> "Model":
        """Build a model from layer objects wired with ``set_inputs`` (the original's by-hand style).

        Without ``inputs=``, the input layers are ordered as they are first reached going from the
        outputs back through each layer's inputs in wiring order (``cat.set_inputs([a, b])`` gives
        ``a, b``)."""
        outs = [outputs] if isinstance(outputs, Layer) else list(outputs)
        seen: dict[int, Layer] = {}
        stack = list(reversed(outs))
        while stack:  # depth-first, left to right: push inputs reversed so the first pops first
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen[id(layer)] = layer
            stack.extend(reversed(getattr(layer, "_input_layers", [])))
        return cls(seen.values(), outputs=[o.name for o in outs] if all(o.name for o in outs) else None,
                   **kwargs)

    # -- inspection -------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def consumers(self, name: str) -> list[str]:
        return self._consumers[name]

    def layer(self, name_or_index: "str | int") -> Layer:
        return self.layers[self.resolve(name_or_index)]

    def resolve(self, name_or_index: "str | int", what: str = "layer") -> str:
        """A layer name from a name or a (possibly negative) index into ``layer_names``."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.layers:
                close = [n for n in self.layers if name_or_index.lower() in n.lower()][:5]
                hint = f"; similar names: {close}" if close else ""
                raise InputError(f"unknown {what} {name_or_index!r}: the model has no layer of that "
                                 f"name{hint} (see model.layer_names)")
            return name_or_index
        if isinstance(name_or_index, (int,)) and not isinstance(name_or_index, bool):
            names = self.layer_names
            if not -len(names) <= name_or_index < len(names):
                raise InputError(f"{what} index {name_or_index} is out of range: the model has "
                                 f"{len(names)} layers")
            return names[name_or_index]
        raise InputError(f"{what} must be a layer name or index, got {name_or_index!r}")

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """The given layers and every layer they depend on."""
        return _closure(names, lambda n: self.layers[n].inputs)

    def descendants(self, names: Iterable[str]) -> set[str]:
        """The given layers and every layer that depends on them."""
        return _closure(names, self.consumers)

    @property
    def dtype(self) -> torch.dtype:
        for layer in self.layers.values():
            for t in layer.tensors().values():
                if t.is_floating_point():
                    return t.dtype
        for n in self.input_names:  # no floating weights: the dtype the inputs were captured with
            dtype = getattr(self.layers[n], "dtype", None)
            if dtype is not None and dtype.is_floating_point:
                return dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for layer in self.layers.values():
            for t in layer.tensors().values():
                return t.device
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> "Model":
        """Move every layer's tensors (``model.to(torch.float64)``, ``model.to("cuda")``)."""
        for layer in self.layers.values():
            layer.to(*args, **kwargs)
        return self

    # -- forward ----------------------------------------------------------------------------------
    def forward_all(self, inputs: Sequence[Tensor], needed: Iterable[str] | None = None,
                    memos: dict[str, object] | None = None,
                    given: dict[str, Tensor] | None = None,
                    keep: "set[str] | None" = None,
                    dropped: "dict[str, tuple] | None" = None,
                    previous: "dict[str, Tensor] | None" = None) -> dict[str, Tensor]:
        """Run the forward functions; ``inputs`` in ``input_names`` order; returns every value.

        ``memos``: a dict owned by the caller's pass that receives what layers can reuse from this
        forward (see ``Layer.forward_with_memo``). ``given``: values of some layers computed
        elsewhere (integrated gradients interpolates at the end of a linear stem); the layers
        after them run on those. ``keep``: return only these values (and the inputs'), each
        other one freed once the forward has no more use for it; ``dropped`` then receives
        their (per-example shape, dtype, device). ``previous``: values of an earlier forward
        that the caller hands over, one dropped before each layer runs — that layer's own, else
        the next left — and the rest at the end: the memory of each is free for a new value of
        its size."""
        wanted = self.ancestors(needed) if needed is not None else set(self.layers)
        uses: dict[str, int] = {}
        if keep is not None:
            for name in wanted:
                for i in self.layers[name].inputs:
                    uses[i] = uses.get(i, 0) + 1
        values: dict[str, Tensor] = dict(zip(self.input_names, inputs))
        values.update(given or {})
        rows = max((int(t.shape[0]) for t in [*inputs, *(given or {}).values()]), default=0)
        if rows:
            with _ROWS_LOCK:  # one model may be scored from several threads
                self.rows_forwarded += rows
        for name, layer in self.layers.items():
            if name in values or name not in wanted:
                continue
            if isinstance(layer, Input):
                raise InputError(f"no value was given for input layer {name!r}")
            args = [values[i] for i in layer.inputs]
            if previous:  # the earlier value of this layer, or the next left when it had none
                previous.pop(name if name in previous else next(iter(previous)))
            if memos is None:
                values[name] = layer.forward(*args)
            else:
                values[name], memo = layer.forward_with_memo(*args)
                if memo is not None:
                    memos[name] = memo
            if keep is not None:
                del args
                for i in layer.inputs:
                    uses[i] -= 1
                    if uses[i] == 0 and i not in keep and i not in self.input_names:
                        self._drop(values, i, dropped)
                if name not in keep and not uses.get(name):
                    self._drop(values, name, dropped)
        if previous:
            previous.clear()
        return values

    def _drop(self, values: dict[str, Tensor], name: str, dropped: "dict[str, tuple] | None") -> None:
        v = values.pop(name)
        if dropped is not None and isinstance(v, Tensor):
            dropped[name] = (tuple(v.shape[1:]), v.dtype, v.device)

    def layer_shapes(self, inputs: Sequence[Tensor], needed: Iterable[str]) -> dict[str, tuple]:
        """Output shapes (batch axis of 1) of the ``needed`` layers for inputs shaped like
        ``inputs``: from a one-example forward pass, remembered per example shape, so a
        model scored again on same-shaped inputs (or just checked on them) runs no extra pass."""
        key = tuple(tuple(t.shape[1:]) for t in inputs)
        known = self._shapes.get(key, {})
        needed = list(needed)
        if any(n not in known for n in needed):
            with torch.no_grad():
                values = self.forward_all([t[:1] for t in inputs], needed)
            known = self._remember_shapes(key, values)  # not re-read: another thread may write
        return {n: known[n] for n in known}

    def _remember_shapes(self, key: tuple, values: dict[str, Tensor]) -> dict[str, tuple]:
        shapes = dict(self._shapes.get(key, {}))
        shapes.update({n: (1, *v.shape[1:]) for n, v in values.items()})
        self._shapes[key] = shapes  # one assignment: safe to read from other threads
        return shapes

    def __call__(self, *inputs) -> "Tensor | tuple[Tensor, ...]":
        """Forward pass: equals the source model's forward."""
        tensors, to_numpy = prepare_forward_inputs(self, inputs)
        with torch.no_grad():
            values = self.forward_all(tensors, self.output_names)
        if tensors and tensors[0].shape[0] > 0:
            self._remember_shapes(tuple(tuple(t.shape[1:]) for t in tensors), values)
        outs = [values[n] for n in self.output_names]
        if to_numpy:
            outs = [o.detach().cpu().numpy() for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def summary(self) -> str:
        lines = [f"{'name':30s} {'type':24s} inputs"]
        for n, l in self.layers.items():
            lines.append(f"{n:30s} {l.describe():24s} {', '.join(l.inputs)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"deeplift.Model({len(self.layers)} layers, inputs={self.input_names}, "
                f"outputs={self.output_names})")


def _closure(start: Iterable[str], neighbours) -> set[str]:
    out: set[str] = set()
    stack = list(start)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(neighbours(n))
    return out


def _name_unnamed(layers: list[Layer]) -> None:
    counts: Counter[str] = Counter()
    taken = {l.name for l in layers if l.name is not None}
    for layer in layers:
        if layer.name is None:
            base = type(layer).__name__.lower()
            while True:
                candidate = f"{base}_{counts[base]}"
                counts[base] += 1
                if candidate not in taken:
                    break
            layer.name = candidate
            taken.add(candidate)


def _topological_order(by_name: dict[str, Layer]) -> list[str]:
    """Kahn's algorithm, stable with respect to the given order: among the ready layers the one
    given first goes first, so an order that is already topological is kept exactly."""
    position = {n: k for k, n in enumerate(by_name)}
    indeg = {n: len(set(l.inputs)) for n, l in by_name.items()}
    consumers: dict[str, list[str]] = {n: [] for n in by_name}
    for n, l in by_name.items():
        for i in set(l.inputs):
            consumers[i].append(n)
    ready = [position[n] for n in by_name if indeg[n] == 0]
    heapq.heapify(ready)
    names = list(by_name)
    order: list[str] = []
    while ready:
        n = names[heapq.heappop(ready)]
        order.append(n)
        for c in consumers[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(ready, position[c])
    if len(order) != len(by_name):
        raise ValueError("the layer graph has a cycle")
    return order
