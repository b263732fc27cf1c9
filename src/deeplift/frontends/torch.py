"""PyTorch front end: ``nn.Module`` -> deeplift ``Model`` via ``torch.export``.

``torch.export`` (without decompositions) records one high-level ATen op per call site, whatever
the Python spelling (``F.relu``, ``x.relu()``, ``nn.ReLU``, a reused module, ``+=``), so every call
becomes its own layer. Each supported op maps to a layer in ``_OPS``; an op without a rule raises
:class:`UnsupportedLayerError` naming the op and the module it sits in — never a silent fall-back.
The module is not changed: its train/eval flags are restored after capture.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
import weakref
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..errors import DeepLiftError, InputError, UnsupportedLayerError
from ..graph import Model
from ..rules import op_layer_builder
from ..layers import (ELU, GELU, SELU, AdaptiveAvgPool, Add, AvgPool, BatchNorm, Clamp, Concat, Constant,
                      Conv, Dense, Exp, Flatten, Flip, Identity, Input, Layer, LeakyReLU, LogSoftmax, MaxPool,
                      MaxReduce, Mul, Pad, Permute, PReLU, ReLU, Reduce, Reshape, ScalarMul,
                      Select, Sigmoid, SiLU, Slice, Softmax, Softplus, Squeeze, Sub, Tanh, Unsqueeze)

aten = torch.ops.aten


class _Capture:
    """Walks an exported graph and builds layers; one instance per conversion."""

    def __init__(self, ep: torch.export.ExportedProgram, batch_size: int) -> None:
        self.ep = ep
        self.batch_size = batch_size
        self.layers: list[Layer] = []
        self.names: set[str] = set()
        self.value: dict[str, Any] = {}     # node name -> layer name (batch-dependent) or a constant
        self.constants: dict[str, Tensor] = {}
        sig = ep.graph_signature
        state = {**ep.state_dict, **getattr(ep, "constants", {})}
        self.param_of = {}
        for spec in sig.input_specs:
            if spec.target is not None and spec.target in state:
                self.param_of[spec.arg.name] = state[spec.target]
        self.user_inputs = list(sig.user_inputs)
        self.user_outputs = list(sig.user_outputs)

    # -- helpers ----------------------------------------------------------------------------------
    def is_layer(self, v: Any) -> bool:
        return isinstance(v, _LayerRef)

    def add(self, layer: Layer, node: torch.fx.Node, inputs: Sequence["_LayerRef"]) -> "_LayerRef":
        layer.name = self._unique_name(node)
        layer.set_inputs([i.name for i in inputs])
        self.layers.append(layer)
        return _LayerRef(layer.name)

    def constant_layer(self, value: Tensor, node: torch.fx.Node) -> "_LayerRef":
        layer = Constant(value.detach().clone())
        layer.name = self._unique_name(node, suffix="const")
        self.layers.append(layer)
        return _LayerRef(layer.name)

    def as_layer(self, v: Any, node: torch.fx.Node) -> "_LayerRef":
        """A layer reference for an argument that may be a constant tensor or a Python number."""
        if self.is_layer(v):
            return v
        if isinstance(v, (int, float, bool)):
            v = torch.tensor(float(v), dtype=self.dtype)
        return self.constant_layer(v, node)

    def _unique_name(self, node: torch.fx.Node, suffix: str | None = None) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        path = ""
        if stack:
            path = list(stack.values())[-1][0]
            if "_empty_nn_module_stack" in path:
                path = ""
        base = node.name if not path else f"{path}.{node.name}"
        if path and self._module_calls.get(path, 0) == 1 and suffix is None:
            base = path
        if suffix:
            base = f"{base}.{suffix}"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    # -- the walk ---------------------------------------------------------------------------------
    def run(self) -> Model:
        graph = self.ep.graph
        self._module_calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_function":
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path = list(stack.values())[-1][0]
                    self._module_calls[path] = self._module_calls.get(path, 0) + 1
        self.dtype = torch.get_default_dtype()
        for node in graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node)
            elif node.op == "call_function":
                self.value[node.name] = self._call(node)
            elif node.op == "output":
                outs = node.args[0]
                self.outputs = []
                for o in outs:
                    v = self.value.get(o.name) if isinstance(o, torch.fx.Node) else None
                    if not self.is_layer(v):
                        raise UnsupportedLayerError(f"model output {o} does not depend on the inputs")
                    self.outputs.append(v.name)
        inputs = [self.value[n].name for n in self.user_inputs]
        return Model(self.layers, inputs=inputs, outputs=self.outputs)

    def _placeholder(self, node: torch.fx.Node) -> None:
        if node.name in self.param_of:
            self.value[node.name] = self.param_of[node.name]
            return
        val = node.meta.get("val")
        shape = tuple(val.shape[1:]) if val is not None else None
        if val is not None and val.is_floating_point():
            self.dtype = val.dtype
        layer = Input(shape=shape, dtype=val.dtype if val is not None and val.is_floating_point() else None)
        layer.name = node.name
        self.names.add(node.name)
        self.layers.append(layer)
        self.value[node.name] = _LayerRef(node.name)

    def _arg(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.value[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x) for x in a)
        return a

    def _call(self, node: torch.fx.Node) -> Any:
        target = node.target
        if target is operator.getitem:
            src, index = node.args
            v = self.value[src.name]
            if isinstance(v, _MultiOut):
                if index != 0 and not node.users:  # e.g. the unused indices of adaptive max pooling
                    return None
                if index != 0:
                    raise UnsupportedLayerError(
                        f"output {index} of {v.op} ({_where(src)}) is used; only its first output "
                        "(the values) has a DeepLIFT rule")
                return v.first
            if isinstance(v, (tuple, list)):
                return v[index]
            if isinstance(v, _BatchDependent):
                return v
            raise UnsupportedLayerError(f"indexing {src.name} ({_where(node)}) is not supported")
        if target in (aten.sym_size.int,):
            return _BatchSize()
        args = [self._arg(a) for a in node.args]
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        bound = _bind(target, args, kwargs)
        flat = _flat_args(args) + _flat_args(list(kwargs.values()))
        layer_args = [a for a in flat if self.is_layer(a)]
        deferred = [a for a in flat if isinstance(a, _BatchDependent)]
        if not layer_args:  # does not depend on the inputs: fold it into a constant
            if deferred:
                return deferred[0]
            try:
                return _evaluate(target, args, kwargs, node)
            except UnsupportedLayerError as exc:  # built from the batch size: fails only if used
                return _BatchDependent(exc)
        build = op_layer_builder(target)
        if build is not None:  # the user's layer for an op of theirs (deeplift.rules.register_op)
            if deferred:
                raise deferred[0].error
            return self.add_user_layer(build, node, bound)
        rule = _OPS.get(_overload_packet(target))
        if rule is None:
            raise UnsupportedLayerError(
                f"op {_op_name(target)} ({_where(node)}) has no DeepLIFT rule; rewrite that part "
                "with supported ops (deeplift.frontends.torch.supported_ops() lists them)")
        if deferred:
            raise deferred[0].error
        try:
            return rule(self, node, bound)
        except ValueError as exc:  # a layer refusing its arguments, e.g. a permute of the batch axis
            raise UnsupportedLayerError(f"op {_op_name(target)} ({_where(node)}): {exc}") from exc


    def add_user_layer(self, build: Callable[..., Layer], node: torch.fx.Node, bound: dict) -> "_LayerRef":
        """A layer from ``build(**constant arguments)``, fed by the op's input-dependent tensors."""
        inputs = [a for a in _flat_args(list(bound.values())) if self.is_layer(a)]
        constants = {k: v for k, v in bound.items() if not any(self.is_layer(a) for a in _flat_args([v]))}
        try:
            layer = build(**constants)
        except Exception as exc:  # noqa: BLE001 - the user's builder
            raise UnsupportedLayerError(f"the layer registered for {_op_name(node.target)} "
                                        f"({_where(node)}) could not be built: {type(exc).__name__}: "
                                        f"{exc}") from exc
        if not isinstance(layer, Layer):
            raise UnsupportedLayerError(f"the builder registered for {_op_name(node.target)} returned "
                                        f"{type(layer).__name__}, not a deeplift Layer")
        return self.add(layer, node, inputs)


class _LayerRef:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _MultiOut:
    """An op with several outputs of which only the first (values) has a rule."""

    def __init__(self, first: _LayerRef, op: str) -> None:
        self.first, self.op = first, op


class _BatchSize:
    """The symbolic batch size (``x.shape[0]`` / ``x.size(0)``)."""


class _BatchDependent:
    """A tensor computed from the batch size but not from the inputs (``torch.zeros(x.size(0),
    ...)``). It becomes no layer; the error is raised only when an op with a rule consumes it,
    so that an op without a rule that builds such state (``nn.LSTM``'s zero initial state) is
    reported under its own name."""

    def __init__(self, error: UnsupportedLayerError) -> None:
        self.error = error


def _flat_args(args: Sequence[Any]) -> list[Any]:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.extend(_flat_args(a))
        else:
            out.append(a)
    return out


def _overload_packet(target: Any) -> Any:
    return getattr(target, "overloadpacket", target)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return str(getattr(target, "_name", name)).replace("aten::", "aten.")


def _where(node: torch.fx.Node) -> str:
    """Where a node sits in the user's model: the module path and class, and the source line."""
    stack = node.meta.get("nn_module_stack") or {}
    parts = []
    if stack:
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        if "_empty_nn_module_stack" not in path:
            parts.append(f"in module {path or '<root>'!r} ({cls.rsplit('.', 1)[-1]})")
    trace = node.meta.get("stack_trace")
    if trace:
        lines = [l.strip() for l in trace.strip().splitlines() if l.strip()]
        if len(lines) >= 2:
            parts.append(f"at {lines[-2]}: {lines[-1]}")
    return ", ".join(parts) if parts else f"node {node.name}"


def _bind(target: Any, args: list, kwargs: dict) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return {"args": args, **kwargs}
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(args):
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _evaluate(target, args, kwargs, node) -> Any:
    def concrete(a):
        if isinstance(a, _BatchSize):
            raise UnsupportedLayerError(f"{_op_name(target)} ({_where(node)}) computes with the batch size")
        if isinstance(a, (list, tuple)):
            return type(a)(concrete(x) for x in a)
        return a
    with torch.no_grad():
        return target(*concrete(args), **concrete(kwargs))


# ---------------------------------------------------------------------------------------------
# op rules: (capture, node, bound arguments) -> layer reference


def _need_constant(v: Any, what: str, node: torch.fx.Node) -> Tensor | None:
    if v is None or isinstance(v, Tensor):
        return v
    raise UnsupportedLayerError(f"{what} of {node.name} ({_where(node)}) depends on the inputs; "
                                "only constant weights are supported")


def _linear(c: _Capture, node, a) -> _LayerRef:
    w = _need_constant(a["weight"], "the weight", node)
    b = _need_constant(a.get("bias"), "the bias", node)
    return c.add(Dense(w, b), node, [a["input"]])


def _matmul(c: _Capture, node, a) -> _LayerRef:
    x, w = a["self"], a["other"]
    if c.is_layer(x) and isinstance(w, Tensor) and w.ndim == 2:
        return c.add(Dense(w.t()), node, [x])
    raise UnsupportedLayerError(f"{_op_name(node.target)} ({_where(node)}): only input @ constant "
                                "matrix is supported")


def _addmm(c: _Capture, node, a) -> _LayerRef:
    if c.is_layer(a["mat1"]) and isinstance(a["mat2"], Tensor) and not c.is_layer(a["self"]):
        if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
            raise UnsupportedLayerError(f"addmm with alpha/beta ({_where(node)}) is not supported")
        return c.add(Dense(a["mat2"].t(), a["self"]), node, [a["mat1"]])
    raise UnsupportedLayerError(f"addmm ({_where(node)}): only bias + input @ constant is supported")


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    pads = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads


def _conv(c: _Capture, node, a) -> _LayerRef:
    w = _need_constant(a["weight"], "the weight", node)
    b = _need_constant(a.get("bias"), "the bias", node)
    nd = w.ndim - 2
    if a.get("transposed"):
        raise UnsupportedLayerError(f"transposed convolution ({_where(node)}) has no DeepLIFT rule yet")
    stride, dilation = list(a["stride"]), list(a["dilation"])
    stride = stride * nd if len(stride) == 1 else stride
    dilation = dilation * nd if len(dilation) == 1 else dilation
    padding = a["padding"]
    if isinstance(padding, str):
        padding = [(0, 0)] * nd if padding == "valid" else _same_padding(w.shape[2:], dilation)
    else:
        padding = list(padding) * nd if len(padding) == 1 else list(padding)
    return c.add(Conv(w, b, stride, padding, dilation, a["groups"]), node, [a["input"]])


def _batch_norm(c: _Capture, node, a) -> Any:
    if a.get("training"):
        raise UnsupportedLayerError(f"batch norm in training mode ({_where(node)}); call model.eval()")
    ref = c.add(BatchNorm(a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
                          a["eps"]), node, [a["input"]])
    if _overload_packet(node.target) is aten._native_batch_norm_legit_no_training:
        return _MultiOut(ref, "batch norm")
    return ref


def _pool_args(a, nd):
    k = list(a["kernel_size"])
    stride = list(a["stride"]) or k
    return k, stride, list(a["padding"])


def _max_pool(nd: int, multi: bool = False):
    def rule(c: _Capture, node, a):
        k, stride, padding = _pool_args(a, nd)
        ref = c.add(MaxPool(nd, k, stride, padding, list(a["dilation"]), a["ceil_mode"]), node, [a["self"]])
        return _MultiOut(ref, "max pooling with indices") if multi else ref
    return rule


def _avg_pool(nd: int):
    def rule(c: _Capture, node, a):
        k, stride, padding = _pool_args(a, nd)
        return c.add(AvgPool(nd, k, stride, padding, a["ceil_mode"], a["count_include_pad"],
                             a.get("divisor_override")), node, [a["self"]])
    return rule


def _adaptive_avg(nd: int):
    def rule(c: _Capture, node, a):
        size = list(a["output_size"])
        if all(s == 1 for s in size):
            return c.add(Reduce(range(-nd, 0), keepdim=True, mean=True), node, [a["self"]])
        return c.add(AdaptiveAvgPool(nd, size), node, [a["self"]])
    return rule


def _adaptive_max(nd: int):
    def rule(c: _Capture, node, a):
        size = list(a["output_size"])
        if not all(s == 1 for s in size):
            raise UnsupportedLayerError(f"adaptive max pooling to {size} ({_where(node)}); only a "
                                        "global (output size 1) adaptive max pool is supported")
        return _MultiOut(c.add(MaxReduce(range(-nd, 0), keepdim=True), node, [a["self"]]),
                         "adaptive max pooling")
    return rule


def _unary(make: Callable[[dict], Layer], key: str = "self"):
    def rule(c: _Capture, node, a):
        return c.add(make(a), node, [a[key]])
    return rule


def _elu(a) -> Layer:
    if a.get("scale", 1) == 1 and a.get("input_scale", 1) == 1:
        return ELU(a.get("alpha", 1.0))
    raise UnsupportedLayerError("elu with scale/input_scale other than 1")


def _prelu(c: _Capture, node, a):
    w = _need_constant(a["weight"], "the PReLU weight", node)
    return c.add(PReLU(w, axis=1), node, [a["self"]])


def _softmax(c: _Capture, node, a):
    return c.add(Softmax(a["dim"]), node, [a["self"]])


def _log_softmax(c: _Capture, node, a):
    return c.add(LogSoftmax(a["dim"]), node, [a["self"]])


def _clamp(inclusive: bool, lo: str = "min", hi: str = "max", defaults=(None, None)):
    def rule(c: _Capture, node, a):
        low, high = a.get(lo, defaults[0]), a.get(hi, defaults[1])
        if isinstance(low, Tensor) or isinstance(high, Tensor):
            raise UnsupportedLayerError(f"clamp with tensor bounds ({_where(node)}) has no DeepLIFT rule")
        return c.add(Clamp(low, high, inclusive=inclusive), node, [a["self"]])
    return rule


def _add_like(sign: float):
    def rule(c: _Capture, node, a):
        x, y = a["self"], a["other"]
        alpha = a.get("alpha", 1)
        if alpha != 1:
            if c.is_layer(y):
                y = c.add(ScalarMul(torch.tensor(float(alpha), dtype=c.dtype)), node, [y])
            else:
                y = y * alpha
        if not c.is_layer(x):  # constant - layer (or constant + layer)
            x, y = y, x
            if sign < 0:  # c - y  ==  (-y) + c
                x = c.add(ScalarMul(torch.tensor(-1.0, dtype=c.dtype)), node, [x])
                return c.add(Add(), node, [x, c.as_layer(y, node)])
        if sign < 0 and c.is_layer(y):
            return c.add(Sub(), node, [x, y])
        if sign < 0:
            y = -y
        return c.add(Add(), node, [x, c.as_layer(y, node)])
    return rule


def _rsub(c: _Capture, node, a):
    x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
    neg = c.add(ScalarMul(torch.tensor(-float(alpha), dtype=c.dtype)), node, [x])
    return c.add(Add(), node, [neg, c.as_layer(y, node)])


def _mul(c: _Capture, node, a):
    x, y = a["self"], a["other"]
    if c.is_layer(x) and c.is_layer(y):
        return c.add(Mul(), node, [x, y])
    layer, factor = (x, y) if c.is_layer(x) else (y, x)
    factor = factor if isinstance(factor, Tensor) else torch.tensor(float(factor), dtype=c.dtype)
    return c.add(ScalarMul(factor), node, [layer])


def _div(c: _Capture, node, a):
    x, y = a["self"], a["other"]
    if c.is_layer(y):
        raise UnsupportedLayerError(f"{_op_name(node.target)}: division by a value that depends on the "
                                    f"inputs ({_where(node)}) has no DeepLIFT rule")
    if a.get("rounding_mode") is not None:
        raise UnsupportedLayerError(f"rounding division ({_where(node)}) has no DeepLIFT rule")
    y = y if isinstance(y, Tensor) else torch.tensor(float(y), dtype=c.dtype)
    return c.add(ScalarMul(1.0 / y), node, [x])


def _neg(c: _Capture, node, a):
    return c.add(ScalarMul(torch.tensor(-1.0, dtype=c.dtype)), node, [a["self"]])


def _cat(c: _Capture, node, a):
    parts = [c.as_layer(t, node) for t in a["tensors"]]
    return c.add(Concat(a["dim"]), node, parts)


def _reduce(mean: bool):
    def rule(c: _Capture, node, a):
        dims = a.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            raise UnsupportedLayerError(f"{_op_name(node.target)} over all axes ({_where(node)}) would "
                                        "mix examples; reduce over the non-batch axes")
        dims = [dims] if isinstance(dims, int) else list(dims)
        return c.add(Reduce(dims, a.get("keepdim", False), mean), node, [a["self"]])
    return rule


def _amax(c: _Capture, node, a):
    dims = a.get("dim")
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims:
        raise UnsupportedLayerError(f"max over all axes ({_where(node)}) would mix examples")
    return c.add(MaxReduce(dims, a.get("keepdim", False)), node, [a["self"]])


def _max_dim(c: _Capture, node, a):
    ref = c.add(MaxReduce([a["dim"]], a.get("keepdim", False)), node, [a["self"]])
    return _MultiOut(ref, "max with indices")


def _batch_shape(c: _Capture, node, shape) -> list[int]:
    shape = list(shape)
    first = shape[0] if shape else None
    if not (isinstance(first, _BatchSize) or first == -1 or first == c.batch_size):
        raise UnsupportedLayerError(f"reshape to {shape} ({_where(node)}) does not keep the batch axis first")
    rest = shape[1:]
    if any(isinstance(s, _BatchSize) for s in rest):
        raise UnsupportedLayerError(f"reshape to {shape} ({_where(node)}) uses the batch size in a non-batch axis")
    return [int(s) for s in rest]


def _view(c: _Capture, node, a):
    return c.add(Reshape(_batch_shape(c, node, a.get("size", a.get("shape")))), node, [a["self"]])


def _flatten(c: _Capture, node, a):
    return c.add(Flatten(a["start_dim"], a["end_dim"]), node, [a["self"]])


def _permute(c: _Capture, node, a):
    return c.add(Permute(a["dims"]), node, [a["self"]])


def _transpose(c: _Capture, node, a):
    ndim = node.args[0].meta["val"].ndim
    dims = list(range(ndim))
    d0, d1 = a["dim0"] % ndim, a["dim1"] % ndim
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return c.add(Permute(dims), node, [a["self"]])


def _unsqueeze(c: _Capture, node, a):
    return c.add(Unsqueeze(a["dim"]), node, [a["self"]])


def _squeeze(c: _Capture, node, a):
    dims = a.get("dim")
    dims = None if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    return c.add(Squeeze(dims), node, [a["self"]])


def _slice(c: _Capture, node, a):
    ndim = node.args[0].meta["val"].ndim
    dim = a.get("dim", 0) % ndim
    start, end, step = a.get("start"), a.get("end"), a.get("step", 1)
    if dim == 0:
        if (start in (None, 0)) and (end is None or end >= 2 ** 62) and step == 1:
            return c.add(Identity(), node, [a["self"]])
        raise UnsupportedLayerError(f"slicing the batch axis ({_where(node)}) mixes examples")
    return c.add(Slice(dim, start, None if end is not None and end >= 2 ** 62 else end, step),
                 node, [a["self"]])


def _select(c: _Capture, node, a):
    return c.add(Select(a["dim"], int(a["index"])), node, [a["self"]])


def _index(c: _Capture, node, a):
    indices = a["indices"]
    used = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(used) == 1 and isinstance(used[0][1], Tensor) and used[0][0] > 0 and used[0][1].ndim == 1:
        d, i = used[0]
        return c.add(Select(d, i.tolist()), node, [a["self"]])
    raise UnsupportedLayerError(f"advanced indexing ({_where(node)}) is supported only with one 1-D "
                                "index along a non-batch axis")


def _index_select(c: _Capture, node, a):
    index = _need_constant(a["index"], "the index", node)
    ndim = node.args[0].meta["val"].ndim
    if a["dim"] % ndim == 0:
        raise UnsupportedLayerError(f"index_select on the batch axis ({_where(node)}) mixes examples")
    return c.add(Select(a["dim"], index.reshape(-1).tolist()), node, [a["self"]])


def _flip(c: _Capture, node, a):
    return c.add(Flip(a["dims"]), node, [a["self"]])


def _split(c: _Capture, node, a):
    """``split``/``split_with_sizes``/``chunk``: one slice layer per piece (read with getitem)."""
    ndim = node.args[0].meta["val"].ndim
    dim = a.get("dim", 0) % ndim
    if dim == 0:
        raise UnsupportedLayerError(f"splitting the batch axis ({_where(node)}) mixes examples")
    length = int(node.args[0].meta["val"].shape[dim])
    if "split_sizes" in a:
        sizes = [int(s) for s in a["split_sizes"]]
    elif "chunks" in a:
        step = -(-length // int(a["chunks"]))
        sizes = [min(step, length - i) for i in range(0, length, step)]
    else:
        step = int(a["split_size"])
        sizes = [min(step, length - i) for i in range(0, length, step)]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(c.add(Slice(dim, start, start + size), node, [a["self"]]))
        start += size
    return pieces


def _pad(c: _Capture, node, a):
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise UnsupportedLayerError(f"{mode} padding ({_where(node)}) has no DeepLIFT rule")
    value = a.get("value") or 0.0
    return c.add(Pad(a["pad"], value), node, [a["self"]])


def _identity(c: _Capture, node, a):
    x = a.get("self", a.get("input"))
    return c.add(Identity(), node, [x])


def _dropout(c: _Capture, node, a):
    if a.get("train"):
        raise UnsupportedLayerError(f"dropout in training mode ({_where(node)}); call model.eval()")
    return _identity(c, node, {"self": a["input"]})


def _to_copy(c: _Capture, node, a):
    return _identity(c, node, a)


_OPS: dict[Any, Callable] = {
    aten.linear: _linear,
    aten.matmul: _matmul, aten.mm: _matmul,
    aten.addmm: _addmm,
    aten.conv1d: _conv, aten.conv2d: _conv, aten.conv3d: _conv, aten.convolution: _conv,
    aten.batch_norm: _batch_norm, aten._native_batch_norm_legit_no_training: _batch_norm,
    aten.max_pool1d: _max_pool(1), aten.max_pool2d: _max_pool(2), aten.max_pool3d: _max_pool(3),
    aten.max_pool1d_with_indices: _max_pool(1, True), aten.max_pool2d_with_indices: _max_pool(2, True),
    aten.max_pool3d_with_indices: _max_pool(3, True),
    aten.avg_pool1d: _avg_pool(1), aten.avg_pool2d: _avg_pool(2), aten.avg_pool3d: _avg_pool(3),
    aten.adaptive_avg_pool1d: _adaptive_avg(1), aten.adaptive_avg_pool2d: _adaptive_avg(2),
    aten.adaptive_avg_pool3d: _adaptive_avg(3), aten._adaptive_avg_pool2d: _adaptive_avg(2),
    aten.adaptive_max_pool1d: _adaptive_max(1), aten.adaptive_max_pool2d: _adaptive_max(2),
    aten.adaptive_max_pool3d: _adaptive_max(3),
    aten.relu: _unary(lambda a: ReLU()), aten.relu_: _unary(lambda a: ReLU()),
    aten.leaky_relu: _unary(lambda a: LeakyReLU(a.get("negative_slope", 0.01))),
    aten.leaky_relu_: _unary(lambda a: LeakyReLU(a.get("negative_slope", 0.01))),
    aten.prelu: _prelu, aten._prelu_kernel: _prelu,
    aten.elu: _unary(_elu), aten.elu_: _unary(_elu),
    aten.selu: _unary(lambda a: SELU()), aten.selu_: _unary(lambda a: SELU()),
    aten.sigmoid: _unary(lambda a: Sigmoid()), aten.sigmoid_: _unary(lambda a: Sigmoid()),
    aten.tanh: _unary(lambda a: Tanh()), aten.tanh_: _unary(lambda a: Tanh()),
    aten.softplus: _unary(lambda a: Softplus(a.get("beta", 1.0), a.get("threshold", 20.0))),
    aten.silu: _unary(lambda a: SiLU()), aten.silu_: _unary(lambda a: SiLU()),
    aten.gelu: _unary(lambda a: GELU(a.get("approximate", "none"))),
    aten.gelu_: _unary(lambda a: GELU(a.get("approximate", "none"))),
    aten.exp: _unary(lambda a: Exp()), aten.exp_: _unary(lambda a: Exp()),
    aten.softmax: _softmax, aten._softmax: _softmax,
    aten.log_softmax: _log_softmax, aten._log_softmax: _log_softmax,
    aten.clamp: _clamp(True), aten.clamp_: _clamp(True),
    aten.hardtanh: _clamp(False, "min_val", "max_val", (-1.0, 1.0)),
    aten.hardtanh_: _clamp(False, "min_val", "max_val", (-1.0, 1.0)),
    aten.relu6: _clamp(False, "min_val", "max_val", (0.0, 6.0)),
    aten.add: _add_like(1.0), aten.add_: _add_like(1.0),
    aten.sub: _add_like(-1.0), aten.sub_: _add_like(-1.0), aten.rsub: _rsub,
    aten.mul: _mul, aten.mul_: _mul,
    aten.div: _div, aten.div_: _div,
    aten.neg: _neg,
    aten.cat: _cat, aten.concat: _cat, aten.concatenate: _cat,
    aten.mean: _reduce(True), aten.sum: _reduce(False),
    aten.amax: _amax, aten.max: _max_dim,
    aten.view: _view, aten.reshape: _view, aten._unsafe_view: _view,
    aten.flatten: _flatten,
    aten.permute: _permute, aten.transpose: _transpose,
    aten.unsqueeze: _unsqueeze, aten.squeeze: _squeeze,
    aten.slice: _slice, aten.select: _select, aten.index: _index, aten.index_select: _index_select,
    aten.pad: _pad, aten.constant_pad_nd: _pad,
    aten.flip: _flip,
    aten.split: _split, aten.split_with_sizes: _split, aten.chunk: _split,
    aten.dropout: _dropout, aten.feature_dropout: _dropout, aten.alpha_dropout: _dropout,
    aten.clone: _identity, aten.contiguous: _identity, aten.alias: _identity,
    aten.detach: _identity, aten._to_copy: _to_copy, aten.to: _to_copy,
}


# ---------------------------------------------------------------------------------------------
# entry points


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """Put every submodule in eval mode and restore each one's flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _example_tuple(example_inputs: Any) -> tuple[Tensor, ...]:
    if isinstance(example_inputs, dict):
        raise InputError("example_inputs: pass a tensor or a tuple of tensors in forward()'s order")
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            import numpy as np
            t = torch.from_numpy(np.asarray(t))
        out.append(t)
    return tuple(out)


def convert_module(module: torch.nn.Module, example_inputs: Any, check: bool = True,
                   atol: float | None = None) -> Model:
    """Capture ``module`` (in eval mode) as a deeplift Model, from example inputs (N, ...).

    The batch axis is exported as dynamic so the model works for any batch size. With
    ``check`` the converted forward pass is compared with the module's on the examples and a
    mismatch raises.
    """
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"convert() needs a torch.nn.Module, got {type(module).__name__}")
    examples = _example_tuple(example_inputs)
    try:
        param = next(iter(module.parameters()))
        examples = tuple(e.to(device=param.device, dtype=param.dtype) if e.is_floating_point() else e
                         for e in examples)
    except StopIteration:
        pass
    if any(e.ndim == 0 for e in examples):
        raise InputError("example_inputs must have a batch axis (N, ...)")
    if examples[0].shape[0] < 2:  # a batch of one lets export specialise the batch size
        examples = tuple(torch.cat([e, e]) for e in examples)
    batch = examples[0].shape[0]
    with _CONVERT_LOCK, _eval_mode(module), torch.no_grad():
        try:  # a module that cannot run on the examples is the user's to fix, not an export failure
            expected = module(*examples)
            if isinstance(expected, dict) or not all(
                    isinstance(e, Tensor) for e in (expected if isinstance(expected, (tuple, list))
                                                    else (expected,))):
                raise UnsupportedLayerError(
                    f"{type(module).__name__} returns {type(expected).__name__}; deeplift needs a model "
                    "that returns a tensor or a tuple of tensors (wrap it to return the logits)")
        except UnsupportedLayerError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the shapes that were tried
            shapes = ", ".join(str(tuple(e.shape)) for e in examples)
            raise InputError(f"{type(module).__name__} fails on example inputs of shape {shapes}: "
                             f"{type(exc).__name__}: {exc}") from exc
        ep = _export(module, examples)
        model = _Capture(ep, batch).run()
        if check:
            _check_forward(model, examples, expected, atol)
    return model


def _export(module: torch.nn.Module, examples: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    dims = tuple({0: torch.export.Dim.AUTO} for _ in examples)
    errors = []
    for dynamic in (dims, None):
        try:
            return torch.export.export(module, examples, dynamic_shapes=dynamic, strict=False)
        except Exception as exc:  # noqa: BLE001 - re-raised below with context
            errors.append(exc)
    raise UnsupportedLayerError(f"torch.export could not capture {type(module).__name__}: "
                                f"{type(errors[-1]).__name__}: {errors[-1]}") from errors[-1]


def supported_ops() -> list[str]:
    """Names of the ATen ops the PyTorch front end has a rule for."""
    return sorted(_op_name(k) for k in _OPS)


def _check_forward(model: Model, examples, expected, atol) -> None:
    got = model(*examples)
    got = got if isinstance(got, tuple) else (got,)
    exp = expected if isinstance(expected, (tuple, list)) else (expected,)
    if len(got) != len(exp):
        raise DeepLiftError(f"the converted model has {len(got)} outputs, the module {len(exp)}")
    for i, (g, e) in enumerate(zip(got, exp)):
        e = e.detach()
        tol = atol if atol is not None else (1e-4 if e.dtype == torch.float32 else 1e-9) * (1 + e.abs().max().item())
        err = (g - e).abs().max().item() if g.shape == e.shape else math.inf
        if not err <= tol:
            raise DeepLiftError(f"the converted model's output {i} differs from the module's by {err:.3g} "
                                f"(shape {tuple(g.shape)} vs {tuple(e.shape)}); please report this")


def _in_forward_order(module: torch.nn.Module, inputs: dict) -> tuple:
    """Dict inputs keyed by ``forward``'s argument names, as a tuple in ``forward``'s order."""
    import inspect
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if set(inputs) != set(names[:len(inputs)]):
        raise InputError(f"inputs: the keys {sorted(inputs)} must be the first arguments of "
                         f"{type(module).__name__}.forward {names}")
    return tuple(inputs[n] for n in names[:len(inputs)])


_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[Any, Model]]" = weakref.WeakKeyDictionary()
#: one conversion at a time: torch.export swaps a module's parameters for fake tensors while it
#: traces, so another thread must neither export nor read the parameters meanwhile
_CONVERT_LOCK = threading.RLock()


def convert_cached(module: torch.nn.Module, inputs: Any) -> Model:
    """Convert once per module and weights version (``attribute`` accepts modules directly)."""
    with _CONVERT_LOCK:
        return _convert_cached(module, inputs)


def _convert_cached(module: torch.nn.Module, inputs: Any) -> Model:
    examples = _example_tuple(inputs if not isinstance(inputs, dict) else tuple(inputs.values()))
    key = (tuple((n, t.data_ptr(), t._version, t.dtype, t.device) for n, t in
                 list(module.named_parameters()) + list(module.named_buffers())),
           tuple(tuple(e.shape[1:]) for e in examples))  # a new example shape converts again
    hit = _CACHE.get(module)
    if hit is not None and hit[0] == key:
        return hit[1]
    examples = inputs if not isinstance(inputs, dict) else _in_forward_order(module, inputs)
    examples = _example_tuple(examples)
    examples = tuple(e[:2] for e in examples)
    model = convert_module(module, examples)
    _CACHE[module] = (key, model)
    return model


def convert_exported(ep: torch.export.ExportedProgram) -> Model:
    """Build a Model from a ``torch.export`` program, e.g. ``load_exported("model.pt2")`` (from
    :mod:`deeplift.frontends.torch_archive`, which unlike ``torch.export.load`` runs no code
    stored in the archive).

    The program should be exported in eval mode without ``run_decompositions()`` (decomposed
    programs hide nonlinearities such as softplus from their rules).
    """
    if not isinstance(ep, torch.export.ExportedProgram):
        raise InputError(f"convert_exported() needs a torch.export.ExportedProgram, got {type(ep).__name__}")
    first = next((n for n in ep.graph.nodes if n.op == "placeholder"
                  and n.name in ep.graph_signature.user_inputs), None)
    val = None if first is None else first.meta.get("val")
    batch = val.shape[0] if val is not None and val.ndim else -1
    with torch.no_grad():
        return _Capture(ep, batch if isinstance(batch, int) else -1).run()
