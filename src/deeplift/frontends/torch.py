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
from ..layers.structure import BatchConstant
from .torch_recurrent import RECURRENT_OPS, StackedStates, select_row
from .torch_structure import (BROADCASTING, SHAPE_ONLY, STRUCTURE_OPS, BatchMoved, Folded, conv_transposed,
                              fold_use, fold_view, pending_use)
from ..layers import (Abs, Einsum, Erf, Hardsigmoid, Hardswish, Log, Log1p, LogSumExp, MatMul, Mish,
                      Normalize, PathIntegrated, Pow, Reciprocal, Rsqrt, ScalarPow, Sqrt)

aten = torch.ops.aten


class _Capture:
    """Walks an exported graph and builds layers; one instance per conversion."""

    def __init__(self, ep: torch.export.ExportedProgram, batch_size: int, unknown_ops: str = "error",
                 outputs: Sequence[int] | None = None) -> None:
        self.ep = ep
        self.keep_outputs = None if outputs is None else list(outputs)
        self.batch_size = batch_size
        self.unknown_ops = _check_unknown_ops(unknown_ops)
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

    def add(self, layer: Layer, node: torch.fx.Node, inputs: Sequence["_LayerRef"],
            suffix: str | None = None) -> "_LayerRef":
        layer.name = self._unique_name(node, suffix)
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

    # -- for the rule modules (torch_structure.py, torch_recurrent.py) ------------------------------
    def where(self, node: torch.fx.Node) -> str:
        return _where(node)

    def is_batch_size(self, v: Any) -> bool:
        return isinstance(v, _BatchSize)

    def need_constant(self, v: Any, what: str, node: torch.fx.Node) -> Tensor | None:
        return _need_constant(v, what, node)

    def constant_value(self, v: Any) -> Tensor | None:
        """A constant argument's value (one example's worth for a batch-dependent one); None when
        it depends on the inputs."""
        if isinstance(v, _BatchDependent):
            try:
                v = v.at(1)
            except Exception:  # noqa: BLE001 - not computable from the batch size alone
                return None
        return v if isinstance(v, Tensor) else None

    def batch_multiple(self, v: Any) -> int | None:
        """``k`` when ``v`` is ``k`` times the batch size (``x.shape[0]``, ``16 * x.shape[0]``)."""
        if isinstance(v, _BatchSize):
            return 1
        if isinstance(v, _BatchDependent):
            try:
                one, three = v.at(1), v.at(3)
            except Exception:  # noqa: BLE001 - not a function of the batch size alone
                return None
            if isinstance(one, int) and isinstance(three, int) and three == 3 * one and one > 0:
                return one
        return None

    def bind(self, target: Any, args: list, kwargs: dict) -> dict:
        return _bind(target, args, kwargs)

    def batch_constant(self, v: "_BatchDependent", node: torch.fx.Node) -> "_LayerRef":
        """A layer for a constant that repeats one value for every example (its batch size comes
        from the first input); refused with the constant's own error when it is not of that form."""
        value = v.per_example()
        if value is None:
            raise v.error
        layer = BatchConstant(value)
        layer.name = self._unique_name(node, suffix="const")
        layer.set_inputs([self.value[self.user_inputs[0]].name])
        self.layers.append(layer)
        return _LayerRef(layer.name)

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
        # ops that feed no (chosen) output are dropped before any rule is looked up
        live = _live_nodes(graph, self.keep_outputs)
        failures: list[tuple[torch.fx.Node, UnsupportedLayerError]] = []
        for node in graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node)
            elif node.op == "call_function":
                if node.name not in live:
                    continue
                try:
                    self.value[node.name] = self._call(node)
                except UnsupportedLayerError as exc:  # keep going: every problem in one report
                    failures.append((node, exc))
                    self.value[node.name] = _FAILED
            elif node.op == "output":
                outs = node.args[0]
                if self.keep_outputs is not None:
                    outs = [outs[i] for i in self.keep_outputs]
                self.outputs = []
                for o in outs:
                    v = self.value.get(o.name) if isinstance(o, torch.fx.Node) else None
                    if v is _FAILED:
                        continue
                    if not self.is_layer(v):
                        failures.append((node, UnsupportedLayerError(
                            f"model output {o} does not depend on the inputs")))
                        continue
                    self.outputs.append(v.name)
        if failures:
            raise _failure_report(failures)
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
        layer = Input(shape=shape, dtype=val.dtype if val is not None and not val.is_complex() else None)
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
        if any(self.value.get(n.name) is _FAILED for n in node.all_input_nodes):
            # downstream of an op already reported: reported too only if it has no rule itself
            if (target is not operator.getitem and target is not aten.sym_size.int
                    and _rule_for(target) is None and op_layer_builder(target) is None):
                raise UnsupportedLayerError(f"op {_op_name(target)} ({_where(node)}) has no DeepLIFT rule")
            return _FAILED
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
        flat = _flat_args(args) + _flat_args(list(kwargs.values()))
        moved = [a for a in flat if isinstance(a, BatchMoved)]
        if moved:  # q, k, v = qkv.permute(2, 0, ...).unbind(0)
            return pending_use(self, node, moved[0], target, _bind(target, args, kwargs))
        folded = [a for a in flat if isinstance(a, Folded)]
        if folded:  # windows folded into the batch axis
            return fold_use(self, node, folded[0], target, args, kwargs, _rule_for)
        stacked = [a for a in flat if isinstance(a, StackedStates)]
        if stacked:  # h_n[i] of a recurrent layer
            dim = 0 if target is operator.getitem else _bind(target, args, kwargs).get("dim", -1)
            index = node.args[1] if target is operator.getitem else _bind(target, args, kwargs).get("index")
            if _overload_packet(target) not in (operator.getitem, aten.select) or not isinstance(index, int):
                raise UnsupportedLayerError(f"the {stacked[0].what} of a recurrent layer ({_where(node)}) "
                                            "is used other than by whole rows (h_n[i])")
            return select_row(self, node, stacked[0], dim, index)
        if _overload_packet(target) in SHAPE_ONLY:  # values never read: a constant per example
            args = [_shape_stub(a, x) for a, x in zip(args, node.args)]
            kwargs = {k: _shape_stub(v, node.kwargs[k]) for k, v in kwargs.items()}
            flat = _flat_args(args) + _flat_args(list(kwargs.values()))
        layer_args = [a for a in flat if self.is_layer(a)]
        deferred = [a for a in flat if isinstance(a, _BatchDependent)]
        if not layer_args:  # does not depend on the inputs: fold it into a constant
            try:
                if deferred:
                    raise deferred[0].error
                return _evaluate(target, args, kwargs, node)
            except UnsupportedLayerError as exc:  # built from the batch size: a layer once used
                dependent = _BatchDependent(exc, target, args, kwargs)
                same = dependent.batch_free()
                return dependent if same is None else same
        if deferred and _overload_packet(target) not in RECURRENT_OPS and _overload_packet(target) not in (
                aten.view, aten.reshape, aten._unsafe_view):
            # a constant that repeats per example, used by an op with a rule (recurrent layers
            # read their zero initial state themselves)
            broadcast = _overload_packet(target) in BROADCASTING
            args, kwargs = self._materialize(args, node, broadcast), self._materialize(kwargs, node, broadcast)
        bound = _bind(target, args, kwargs)
        build = op_layer_builder(target)
        if build is not None:  # the user's layer for an op of theirs (deeplift.rules.register_op)
            return self.add_user_layer(build, node, bound)
        rule = _rule_for(target)
        if rule is None and self.unknown_ops == "integrated":
            if deferred:
                raise deferred[0].error
            return _path_integrated(self, node, args, kwargs)
        if rule is None:
            raise UnsupportedLayerError(
                f"op {_op_name(target)} ({_where(node)}) has no DeepLIFT rule; rewrite that part "
                "with supported ops (deeplift.frontends.torch.supported_ops() lists them)")
        try:
            return rule(self, node, bound)
        except ValueError as exc:  # a layer refusing its arguments, e.g. a permute of the batch axis
            raise UnsupportedLayerError(f"op {_op_name(target)} ({_where(node)}): {exc}") from exc


    def _materialize(self, v: Any, node: torch.fx.Node, broadcast: bool) -> Any:
        """Batch-dependent constants as layers, or — for an op that broadcasts its arguments
        against each other (an attention mask, an additive bias) — as one example's value with a
        batch axis of 1, which the op's rule takes as an ordinary constant."""
        if isinstance(v, _BatchDependent):
            if broadcast:
                value = v.per_example()
                if value is None:
                    raise v.error
                return value.unsqueeze(0)
            return self.batch_constant(v, node)
        if isinstance(v, dict):
            return {k: self._materialize(x, node, broadcast) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(self._materialize(x, node, broadcast) for x in v)
        return v

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


def _live_nodes(graph: torch.fx.Graph, keep: Sequence[int] | None = None) -> set[str]:
    """Names of the nodes the graph's outputs (those at positions ``keep``) depend on. An in-place
    op counts as used: it may write into a tensor (or a view of one) that later nodes read, e.g.
    ``mask[-1] = 0``."""
    out = next(n for n in reversed(graph.nodes) if n.op == "output")
    roots = out.all_input_nodes if keep is None else [
        a for i, a in enumerate(out.args[0]) if i in keep and isinstance(a, torch.fx.Node)]
    live: set[str] = set()
    stack = list(roots) + [
        n for n in graph.nodes if n.op == "call_function"
        and getattr(getattr(n.target, "_schema", None), "is_mutable", False)]
    while stack:
        n = stack.pop()
        if n.name not in live:
            live.add(n.name)
            stack.extend(n.all_input_nodes)
    return live


#: the value of a node whose op could not be converted (its users are not reported again)
_FAILED = object()


def _failure_report(failures: list[tuple[torch.fx.Node, UnsupportedLayerError]]) -> UnsupportedLayerError:
    """One error for every op without a rule: the single error itself, or a table of op, count
    and first use (module and the whole call) with the reason. ``.ops`` lists the rows."""
    if len(failures) == 1:
        node, exc = failures[0]
        exc.ops = [{"op": _failure_op(node), "count": 1, "first": _where(node), "reason": str(exc)}]
        return exc
    rows: dict[str, dict] = {}
    for node, exc in failures:
        op = _failure_op(node)
        if op in rows:
            rows[op]["count"] += 1
        else:
            rows[op] = {"op": op, "count": 1, "first": _where(node), "reason": str(exc)}
    width = max(len(op) for op in rows)
    lines = [f"{len(failures)} ops of the model ({len(rows)} kinds) have no DeepLIFT rule, listed below "
             "(deeplift.frontends.torch.supported_ops() lists the ops that have one):",
             f"  {'op':{width}s}  count  first use"]
    for row in rows.values():
        lines.append(f"  {row['op']:{width}s}  {row['count']:5d}  {row['first']}")
        if "has no DeepLIFT rule" not in row["reason"]:  # a rule exists but refuses these arguments
            lines.append(f"  {'':{width}s}         why: {row['reason']}")
    error = UnsupportedLayerError("\n".join(lines))
    error.ops = list(rows.values())
    return error


def _failure_op(node: torch.fx.Node) -> str:
    return "output" if node.op == "output" else _op_name(node.target)


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
    ...)``, ``class_token.expand(n, -1, -1)``, a mask from ``x.new_zeros``). It is kept as the
    recipe (op and arguments) and becomes a :class:`BatchConstant` layer when an op with a rule
    consumes it — if it repeats one value for every example; otherwise ``error`` is raised then."""

    def __init__(self, error: UnsupportedLayerError, target: Any = None, args: Any = (),
                 kwargs: Any = None) -> None:
        self.error = error
        self.target, self.args, self.kwargs = target, args, kwargs or {}

    def at(self, batch: int) -> Any:
        """The value for a batch of ``batch`` examples."""
        def concrete(a):
            if isinstance(a, _BatchSize):
                return batch
            if isinstance(a, _BatchDependent):
                return a.at(batch)
            if isinstance(a, _ShapeStub):
                return a.at(batch)
            if isinstance(a, (list, tuple)):
                return type(a)(concrete(x) for x in a)
            return a
        if self.target is None:
            raise self.error
        with torch.no_grad():
            return self.target(*concrete(self.args), **{k: concrete(v) for k, v in self.kwargs.items()})

    def batch_free(self) -> Tensor | None:
        """The value when it does not change with the batch size (``x.new_zeros(7, 7)``), else None."""
        try:
            one, three = self.at(1), self.at(3)
        except Exception:  # noqa: BLE001 - not computable from the batch size alone
            return None
        if (isinstance(one, Tensor) and isinstance(three, Tensor) and one.shape == three.shape
                and bool((one == three).all())):
            return one
        return None

    def per_example(self) -> Tensor | None:
        """The one value every example gets, or None when the value is not of that form."""
        try:
            one, three = self.at(1), self.at(3)
        except Exception:  # noqa: BLE001 - not computable from the batch size alone
            return None
        if not (isinstance(one, Tensor) and isinstance(three, Tensor) and one.ndim >= 1
                and one.shape[0] == 1 and three.shape == (3, *one.shape[1:])):
            return None
        if not bool((three == one).all()):
            return None
        return one[0].clone()


class _ShapeStub:
    """Stands in for a layer's value in an op that reads only its shape and dtype (``new_zeros``,
    ``zeros_like``): zeros of that shape for a given batch size."""

    def __init__(self, val: Tensor) -> None:
        self.shape, self.dtype = tuple(val.shape[1:]), val.dtype

    def at(self, batch: int) -> Tensor:
        return torch.zeros((batch, *self.shape), dtype=self.dtype)


def _shape_stub(value: Any, node_arg: Any) -> Any:
    if isinstance(value, _LayerRef):
        val = node_arg.meta.get("val")
        if val is None:
            raise UnsupportedLayerError(f"no shape is known for {node_arg}")
        return _BatchDependent(UnsupportedLayerError(f"a constant built from the shape of {node_arg} "
                                                     "is not the same for every example"),
                               lambda x: x, (_ShapeStub(val),))
    return value


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


def _rule_for(target: Any) -> Callable | None:
    """The rule of an op; an in-place alias (``aten.hardswish_``, ``aten.dropout_``) gets the rule
    of its out-of-place op: the exported graph already routes later uses to its result."""
    packet = _overload_packet(target)
    rule = _OPS.get(packet)
    if rule is None:
        name = _op_name(packet).removeprefix("aten.").split(".")[0]
        if name.endswith("_") and not name.startswith("_"):
            rule = _OPS.get(getattr(aten, name[:-1], None))
    return rule


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
            parts.append(f"at {lines[-2]}: {_whole_call(lines[-2], lines[-1])}")
    return ", ".join(parts) if parts else f"node {node.name}"


def _whole_call(location: str, first_line: str) -> str:
    """The whole statement that starts at a traceback's ``File "f", line N, in g`` (a call written
    over several lines is quoted in full, joined onto one line), else the line given."""
    import io
    import linecache
    import re
    import textwrap
    import tokenize
    found = re.match(r'File "(.+)", line (\d+)', location)
    if not found:
        return first_line
    path, lineno = found.group(1), int(found.group(2))
    text = ""
    for k in range(lineno, lineno + 40):
        line = linecache.getline(path, k)
        if not line:
            break
        text += line
        try:
            list(tokenize.generate_tokens(io.StringIO(textwrap.dedent(text)).readline))
        except (tokenize.TokenError, SyntaxError):
            continue
        joined = " ".join(part.strip() for part in text.splitlines() if part.strip())
        return joined if joined.startswith(first_line.strip()[:20]) else first_line
    return first_line


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
    if _is_batched_matmul(c, node, x, w):
        return _product_matmul(c, node, x, w)
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
        return conv_transposed(c, node, a)
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
    if a.get("rounding_mode") is not None:
        raise UnsupportedLayerError(f"rounding division ({_where(node)}) has no DeepLIFT rule")
    if c.is_layer(y):
        return _divide_by_activation(c, node, x, y)
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
    folded = fold_view(c, node, a)  # issue 9: window attention folds windows into the batch axis
    if folded is not None:
        return folded
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
    return _identity(c, node, {"self": a.get("input", a.get("self"))})


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
# issue 9 part B: structure ops, embeddings, upsampling, transposed convolution, LSTM/GRU
_OPS.update(STRUCTURE_OPS)
_OPS.update(RECURRENT_OPS)


# ---------------------------------------------------------------------------------------------
# issue 9 part A: products of two activations, attention, normalisations, more elementwise ops.
# (One contiguous block; in-place aliases such as ``aten.hardswish_`` are found by _rule_for.)


def _val(node_arg: Any):
    return node_arg.meta.get("val") if isinstance(node_arg, torch.fx.Node) else None


def _ndim(v: Any, node_arg: Any) -> int:
    if isinstance(v, Tensor):
        return v.ndim
    val = _val(node_arg)
    return val.ndim if val is not None else 0


def _is_batched_matmul(c: _Capture, node, x, y) -> bool:
    """Both operands activations of equal rank >= 3 (the batch axis first in both), or one an
    activation of rank >= 3 and the other a constant that does not reach its batch axis."""
    nx, ny = _ndim(x, node.args[0]), _ndim(y, node.args[1])
    if c.is_layer(x) and c.is_layer(y):
        if nx == ny and nx >= 3:
            return True
        raise UnsupportedLayerError(
            f"{_op_name(node.target)} of two activations of shapes {tuple(_val(node.args[0]).shape)} "
            f"and {tuple(_val(node.args[1]).shape)} ({_where(node)}): only a batched product with the "
            "batch axis first in both operands (rank >= 3) keeps examples apart")
    if c.is_layer(x):
        return nx >= 3 and isinstance(y, Tensor) and 2 <= ny < nx
    return c.is_layer(y) and ny >= 3 and isinstance(x, Tensor) and 2 <= nx < ny


def _product_matmul(c: _Capture, node, x, y) -> _LayerRef:
    return c.add(MatMul(), node, [c.as_layer(x, node), c.as_layer(y, node)])


def _bmm(c: _Capture, node, a) -> _LayerRef:
    x, y = a["self"], a["mat2"]
    if not _is_batched_matmul(c, node, x, y):
        raise UnsupportedLayerError(f"bmm ({_where(node)}): an operand mixes examples")
    return _product_matmul(c, node, x, y)


def _baddbmm(c: _Capture, node, a) -> _LayerRef:
    """``beta·self + alpha·(batch1 @ batch2)``."""
    x, y, base = a["batch1"], a["batch2"], a["self"]
    if not _is_batched_matmul(c, node, x, y):
        raise UnsupportedLayerError(f"baddbmm ({_where(node)}): an operand mixes examples")
    out = _product_matmul(c, node, x, y)
    alpha, beta = a.get("alpha", 1), a.get("beta", 1)
    if alpha != 1:
        out = c.add(ScalarMul(torch.tensor(float(alpha), dtype=c.dtype)), node, [out])
    if beta == 0:
        return out
    if c.is_layer(base):
        if beta != 1:
            base = c.add(ScalarMul(torch.tensor(float(beta), dtype=c.dtype)), node, [base])
    else:
        base = base * beta
    return c.add(Add(), node, [out, c.as_layer(base, node)])


def _einsum(c: _Capture, node, a) -> _LayerRef:
    operands = list(a["tensors"])
    if len(operands) != 2:
        raise UnsupportedLayerError(f"einsum of {len(operands)} operands ({_where(node)}); only two "
                                    "operands have a rule (split it into pairwise products)")
    subs, out = _explicit_einsum(a["equation"], [_val(n).ndim for n in node.args[1]])
    batch = subs[0 if c.is_layer(operands[0]) else 1][:1]
    refs = []
    for k, t in enumerate(operands):
        if c.is_layer(t):
            refs.append(t)
        else:  # a constant operand gets a broadcast batch axis under the batch letter
            subs[k] = batch + subs[k]
            refs.append(c.as_layer(t.unsqueeze(0), node))
    return c.add(Einsum(f"{subs[0]},{subs[1]}->{out}"), node, refs)


def _explicit_einsum(equation: str, ndims: list[int]) -> tuple[list[str], str]:
    """Operand subscripts and output with any ``...`` written out (aligned from the right)."""
    import string
    lhs, _, out = equation.replace(" ", "").partition("->")
    subs = lhs.split(",")
    if not _:  # implicit output: the letters used once, in alphabetical order
        letters = "".join(subs).replace(".", "")
        out = ("..." if "..." in lhs else "") + "".join(sorted(ch for ch in set(letters) if letters.count(ch) == 1))
    counts = [nd - (len(s) - 3) if "..." in s else 0 for s, nd in zip(subs, ndims)]
    free = [ch for ch in string.ascii_letters if ch not in lhs + out]
    span = "".join(free[:max(counts, default=0)])
    subs = [s.replace("...", span[len(span) - n:]) if "..." in s else s for s, n in zip(subs, counts)]
    return subs, out.replace("...", span)


def _divide_by_activation(c: _Capture, node, x, y) -> _LayerRef:
    """``x / y`` with ``y`` an activation: ``x·(1/y)`` (Reciprocal rule, then a product)."""
    inv = c.add(Reciprocal(), node, [y])
    if c.is_layer(x):
        return c.add(Mul(), node, [x, inv])
    factor = x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=c.dtype)
    return c.add(ScalarMul(factor), node, [inv])


def _pow(c: _Capture, node, a) -> _LayerRef:
    base, exponent = a["self"], a["exponent"]
    if c.is_layer(base) and not c.is_layer(exponent):
        if isinstance(exponent, Tensor):
            if exponent.numel() != 1:
                raise UnsupportedLayerError(f"pow with a tensor exponent ({_where(node)}) has no rule")
            exponent = exponent.item()
        return c.add(Pow(float(exponent)), node, [base])
    if c.is_layer(exponent) and not c.is_layer(base):
        if isinstance(base, Tensor):
            if base.numel() != 1:
                raise UnsupportedLayerError(f"pow with a tensor base ({_where(node)}) has no rule")
            base = base.item()
        if float(base) <= 0:
            raise UnsupportedLayerError(f"pow of base {base} ({_where(node)}): only a positive base")
        return c.add(ScalarPow(float(base)), node, [exponent])
    raise UnsupportedLayerError(f"pow of two activations ({_where(node)}) has no DeepLIFT rule; write "
                                "it as exp(b·log(a))")


def _logsumexp(c: _Capture, node, a) -> _LayerRef:
    dims = a["dim"]
    dims = [dims] if isinstance(dims, int) else list(dims)
    ndim = _val(node.args[0]).ndim
    if not dims or any(d % ndim == 0 for d in dims):
        raise UnsupportedLayerError(f"logsumexp over the batch axis ({_where(node)}) mixes examples")
    return c.add(LogSumExp(dims, a.get("keepdim", False)), node, [a["self"]])


def _norm_affine(t: Any, node, what: str, example_ndim: int, channel_axis: bool) -> Tensor | None:
    t = _need_constant(t, what, node)
    if t is None or not channel_axis:
        return t
    return t.reshape(-1, *([1] * (example_ndim - 1)))  # per channel of (C, *S)


def _layer_norm(c: _Capture, node, a) -> _LayerRef:
    k = len(a["normalized_shape"])
    return c.add(Normalize(range(-k, 0), a.get("eps", 1e-5), _need_constant(a.get("weight"), "the weight", node),
                           _need_constant(a.get("bias"), "the bias", node)), node, [a["input"]])


def _rms_norm(c: _Capture, node, a) -> _LayerRef:
    k = len(a["normalized_shape"])
    eps = a.get("eps")
    if eps is None:  # torch's default: the machine epsilon of the input's dtype
        eps = torch.finfo(_val(node.args[0]).dtype).eps
    return c.add(Normalize(range(-k, 0), eps, _need_constant(a.get("weight"), "the weight", node),
                           center=False), node, [a["input"]])


def _group_norm(c: _Capture, node, a) -> _LayerRef:
    ndim = _val(node.args[0]).ndim - 1
    return c.add(Normalize((-1,), a.get("eps", 1e-5), _norm_affine(a.get("weight"), node, "the weight", ndim, True),
                           _norm_affine(a.get("bias"), node, "the bias", ndim, True),
                           groups=int(a["num_groups"])), node, [a["input"]])


def _instance_norm(c: _Capture, node, a) -> _LayerRef:
    if not a.get("use_input_stats", True):  # running statistics: a fixed affine map
        return c.add(BatchNorm(a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
                               a["eps"]), node, [a["input"]])
    ndim = _val(node.args[0]).ndim - 1
    return c.add(Normalize(range(-(ndim - 1), 0), a.get("eps", 1e-5),
                           _norm_affine(a.get("weight"), node, "the weight", ndim, True),
                           _norm_affine(a.get("bias"), node, "the bias", ndim, True)), node, [a["input"]])


def _attention(c: _Capture, node, a) -> _LayerRef:
    """``scaled_dot_product_attention`` as its parts: ``softmax(q·kᵀ·scale + mask)·v``, with the
    products by the Shapley rule and the exact softmax rule. A boolean or causal mask becomes an
    additive constant of 0 / the dtype's most negative finite value (the softmax gives exactly 0
    there, as PyTorch's does)."""
    q, k, v = a["query"], a["key"], a["value"]
    vals = [_val(n) for n in node.args[:3]]
    if a.get("dropout_p", 0.0):
        raise UnsupportedLayerError(f"attention with dropout_p={a['dropout_p']} ({_where(node)}) is random; "
                                    "call model.eval() or pass dropout_p=0")
    if len({t.ndim for t in vals}) != 1 or vals[0].ndim < 3:
        raise UnsupportedLayerError(f"attention on operands of shapes {[tuple(t.shape) for t in vals]} "
                                    f"({_where(node)}): q, k and v must have the same rank >= 3")
    if a.get("enable_gqa") and vals[0].shape[-3] != vals[1].shape[-3]:
        raise UnsupportedLayerError(f"grouped-query attention ({_where(node)}) has no rule yet")
    mask = a.get("attn_mask")
    if c.is_layer(mask) and _val(node.args[3]).dtype == torch.bool:
        raise UnsupportedLayerError(f"a boolean attention mask computed from the inputs ({_where(node)}) "
                                    "has no rule")
    return _attention_layers(c, node, c.as_layer(q, node), c.as_layer(k, node), c.as_layer(v, node),
                             vals[0].shape, vals[1].shape, vals[0].dtype, mask, a.get("is_causal"),
                             a.get("scale"))


def _attention_layers(c: _Capture, node, q, k, v, q_shape, k_shape, dtype, mask, is_causal: bool,
                      scale: float | None) -> _LayerRef:
    """``softmax(q·kᵀ·scale + mask)·v`` for q (N, ..., L, E), k (N, ..., S, E), v (N, ..., S, Ev)."""
    ndim = len(q_shape)
    dims = list(range(ndim))
    dims[-1], dims[-2] = dims[-2], dims[-1]
    kt = c.add(Permute(dims), node, [k])
    scores = c.add(MatMul(), node, [q, kt])
    scale = 1.0 / math.sqrt(q_shape[-1]) if scale is None else float(scale)
    scores = c.add(ScalarMul(torch.tensor(scale, dtype=c.dtype)), node, [scores])
    lowest = torch.finfo(dtype).min
    if is_causal:
        mask = torch.ones(q_shape[-2], k_shape[-2], dtype=torch.bool).tril()
    if mask is not None:
        if not c.is_layer(mask):
            mask = (torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, lowest) if mask.dtype == torch.bool
                    else mask.to(dtype).clamp(min=lowest))
        scores = c.add(Add(), node, [scores, c.as_layer(mask, node)])
    weights = c.add(Softmax(-1), node, [scores])
    return c.add(MatMul(), node, [weights, v])


def _multi_head_attention(c: _Capture, node, a) -> _LayerRef:
    """``nn.MultiheadAttention`` (batch first), captured as one op by :func:`_attention_as_one_op`:
    the input projections, heads, attention and output projection as layers."""
    q_shape, k_shape = _val(node.args[0]).shape, _val(node.args[1]).shape
    heads, dtype = int(a["num_heads"]), _val(node.args[0]).dtype

    def project(x, w, b, length):
        h = c.add(Dense(_need_constant(a[w], "the weight", node), _need_constant(a[b], "the bias", node)),
                  node, [c.as_layer(x, node)])
        e = a[w].shape[0]
        h = c.add(Reshape([length, heads, e // heads]), node, [h])
        return c.add(Permute([0, 2, 1, 3]), node, [h]), e

    q, e = project(a["query"], "q_weight", "q_bias", q_shape[1])
    k, _ = project(a["key"], "k_weight", "k_bias", k_shape[1])
    v, ev = project(a["value"], "v_weight", "v_bias", k_shape[1])
    head_q = (q_shape[0], heads, q_shape[1], e // heads)
    head_k = (k_shape[0], heads, k_shape[1], e // heads)
    out = _attention_layers(c, node, q, k, v, head_q, head_k, dtype, a.get("attn_mask"),
                            bool(a.get("is_causal")), None)
    out = c.add(Permute([0, 2, 1, 3]), node, [out])
    out = c.add(Reshape([q_shape[1], ev]), node, [out])
    return c.add(Dense(a["out_weight"], a.get("out_bias")), node, [out])


def _check_unknown_ops(value: str) -> str:
    if value not in ("error", "integrated"):
        raise InputError(f"unknown_ops must be 'error' or 'integrated', got {value!r}")
    return value


class _Slot:
    """Where a layer's value goes in the arguments of an op run by :class:`PathIntegrated`."""

    def __init__(self, index: int) -> None:
        self.index = index


def _path_integrated(c: _Capture, node, args: list, kwargs: dict) -> _LayerRef:
    """An op without a rule as one node with path-integrated multipliers (``unknown_ops``)."""
    val = node.meta.get("val")
    if not isinstance(val, Tensor) or not val.is_floating_point():
        raise UnsupportedLayerError(f"op {_op_name(node.target)} ({_where(node)}) has no DeepLIFT rule, and "
                                    "unknown_ops='integrated' needs an op with one floating tensor output")
    refs: list[_LayerRef] = []

    def template(a):
        if c.is_layer(a):
            refs.append(a)
            return _Slot(len(refs) - 1)
        if isinstance(a, _BatchSize):
            raise UnsupportedLayerError(f"op {_op_name(node.target)} ({_where(node)}) computes with the "
                                        "batch size")
        if isinstance(a, (list, tuple)):
            return type(a)(template(x) for x in a)
        return a

    t_args, t_kwargs = template(list(args)), {k: template(v) for k, v in kwargs.items()}
    target = node.target

    def fill(a, values):
        if isinstance(a, _Slot):
            return values[a.index]
        if isinstance(a, (list, tuple)):
            return type(a)(fill(x, values) for x in a)
        return a

    def fn(*values):
        return target(*fill(t_args, values), **{k: fill(v, values) for k, v in t_kwargs.items()})

    return c.add(PathIntegrated(fn, op=_op_name(target)), node, refs)


_MHA_OP: Any = None


def _mha_op():
    """``deeplift::multi_head_attention``, defined on first use (not on import)."""
    global _MHA_OP
    if _MHA_OP is None:
        schema = ("(Tensor query, Tensor key, Tensor value, Tensor q_weight, Tensor k_weight, "
                  "Tensor v_weight, Tensor? q_bias, Tensor? k_bias, Tensor? v_bias, Tensor out_weight, "
                  "Tensor? out_bias, int num_heads, Tensor? attn_mask, bool is_causal) -> Tensor")

        @torch.library.custom_op("deeplift::multi_head_attention", mutates_args=(), schema=schema)
        def mha(query, key, value, q_weight, k_weight, v_weight, q_bias, k_bias, v_bias, out_weight,
                out_bias, num_heads, attn_mask, is_causal):
            import torch.nn.functional as F
            n = query.shape[0]

            def heads(x, w, b):
                h = F.linear(x, w, b)
                return h.view(n, x.shape[1], num_heads, -1).transpose(1, 2)
            out = F.scaled_dot_product_attention(heads(query, q_weight, q_bias), heads(key, k_weight, k_bias),
                                                 heads(value, v_weight, v_bias), attn_mask=attn_mask,
                                                 is_causal=is_causal)
            return F.linear(out.transpose(1, 2).reshape(n, query.shape[1], -1), out_weight, out_bias)

        @mha.register_fake
        def _(query, key, value, q_weight, k_weight, v_weight, q_bias, k_bias, v_bias, out_weight,
              out_bias, num_heads, attn_mask, is_causal):
            return query.new_empty((*query.shape[:-1], out_weight.shape[0]))

        _MHA_OP = torch.ops.deeplift.multi_head_attention
        _OPS[_MHA_OP] = _multi_head_attention
    return _MHA_OP


def _mha_forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                 average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention.forward`` as one op (its own forward moves the batch axis)."""
    e = self.embed_dim
    if self._qkv_same_embed_dim:
        wq, wk, wv = self.in_proj_weight[:e], self.in_proj_weight[e:2 * e], self.in_proj_weight[2 * e:]
    else:
        wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
    b = self.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # here True means "masked"
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(attn_mask, float("-inf"))
    if attn_mask is not None:
        is_causal = False  # a hint only, when a mask is given
    out = _mha_op()(query, key, value, wq, wk, wv, bq, bk, bv, self.out_proj.weight, self.out_proj.bias,
                    self.num_heads, attn_mask, bool(is_causal))
    return out, None


@contextlib.contextmanager
def _attention_as_one_op(module: torch.nn.Module):
    """While exporting, each batch-first ``nn.MultiheadAttention`` without key padding, bias_k/v or
    zero attention runs as one op; the instances' own ``forward`` is restored afterwards."""
    patched = []
    for m in module.modules():
        if (isinstance(m, torch.nn.MultiheadAttention) and m.batch_first and m.bias_k is None
                and not m.add_zero_attn and "forward" not in vars(m)):
            m.forward = _mha_forward.__get__(m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


_OPS.update({
    aten.bmm: _bmm, aten.baddbmm: _baddbmm, aten.einsum: _einsum,
    aten.scaled_dot_product_attention: _attention,
    aten.layer_norm: _layer_norm, aten.rms_norm: _rms_norm, aten.group_norm: _group_norm,
    aten.instance_norm: _instance_norm,
    aten.log: _unary(lambda a: Log()), aten.log1p: _unary(lambda a: Log1p()),
    aten.sqrt: _unary(lambda a: Sqrt()), aten.rsqrt: _unary(lambda a: Rsqrt()),
    aten.reciprocal: _unary(lambda a: Reciprocal()), aten.abs: _unary(lambda a: Abs()),
    aten.square: _unary(lambda a: Pow(2.0)), aten.pow: _pow,
    aten.erf: _unary(lambda a: Erf()),
    aten.hardswish: _unary(lambda a: Hardswish()), aten.hardsigmoid: _unary(lambda a: Hardsigmoid()),
    aten.mish: _unary(lambda a: Mish()),
    aten.logsumexp: _logsumexp,
})


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
                   atol: float | None = None, unknown_ops: str = "error",
                   outputs: Sequence[int] | None = None) -> Model:
    """Capture ``module`` (in eval mode) as a deeplift Model, from example inputs (N, ...).

    The batch axis is exported as dynamic so the model works for any batch size. With
    ``check`` the converted forward pass is compared with the module's on the examples and a
    mismatch raises. ``unknown_ops="integrated"``: an op without a rule becomes a
    :class:`~deeplift.layers.PathIntegrated` node (not exact; see its docstring) instead of an error.
    ``outputs``: positions of the module's outputs to keep (default all); ops that feed only the
    others are dropped before any rule is looked up (e.g. the head you do not score).
    """
    _check_unknown_ops(unknown_ops)
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
            expected = module(*(e.clone() for e in examples))  # a module may work in place
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
        with _attention_as_one_op(module):
            ep = _export(module, examples)
        if outputs is not None:
            n_out = len(expected) if isinstance(expected, (tuple, list)) else 1
            outputs = [outputs] if isinstance(outputs, int) else list(outputs)
            if not outputs or any(not isinstance(i, int) or not 0 <= i < n_out for i in outputs):
                raise InputError(f"outputs={outputs}: the module has {n_out} output(s); give their "
                                 f"positions 0..{n_out - 1}")
            expected = [(expected if n_out == 1 else expected[i]) for i in outputs]
        model = _Capture(ep, batch, unknown_ops, outputs).run()
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


def convert_cached(module: torch.nn.Module, inputs: Any, unknown_ops: str = "error") -> Model:
    """Convert once per module and weights version (``attribute`` accepts modules directly)."""
    with _CONVERT_LOCK:
        return _convert_cached(module, inputs, unknown_ops)


def _convert_cached(module: torch.nn.Module, inputs: Any, unknown_ops: str) -> Model:
    examples = _example_tuple(inputs if not isinstance(inputs, dict) else tuple(inputs.values()))
    key = (tuple((n, t.data_ptr(), t._version, t.dtype, t.device) for n, t in
                 list(module.named_parameters()) + list(module.named_buffers())),
           tuple(tuple(e.shape[1:]) for e in examples), unknown_ops)  # a new example shape converts again
    hit = _CACHE.get(module)
    if hit is not None and hit[0] == key:
        return hit[1]
    examples = inputs if not isinstance(inputs, dict) else _in_forward_order(module, inputs)
    examples = _example_tuple(examples)
    examples = tuple(e[:2] for e in examples)
    model = convert_module(module, examples, unknown_ops=unknown_ops)
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
