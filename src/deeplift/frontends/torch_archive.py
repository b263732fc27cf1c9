"""Read a ``torch.export`` archive (``.pt2``) without ever running code stored in it.

``torch.export.load`` unpickles parts of an archive (weights and constants marked as pickled,
custom objects, and the sample inputs when loading them as plain tensors fails), and its graph
deserializer passes symbolic-shape strings to ``sympy.sympify`` (which evaluates Python) and
resolves node targets to any attribute of ``torch``, which deeplift's constant folding would call.
So an archive from a stranger could run code. This reader accepts only what a plain exported
``nn.Module`` contains and refuses everything else with a :class:`ModelFormatError`:

* weights and constants must be raw tensor bytes (``use_pickle`` false, no custom or opaque
  objects, no legacy pickled ``.pt`` weight files); each declared shape is checked against the
  bytes present;
* the sample inputs are read with ``torch.load(weights_only=True)`` (tensors only) or refused;
* node targets must be ``torch.ops.aten.*`` operators or plain arithmetic from ``operator`` /
  ``math``; symbolic-shape expressions must be arithmetic over shape symbols;
* guard code (only used by ``ExportedProgram.module()``) is dropped;
* member sizes, JSON size and depth are capped (:mod:`deeplift.file_limits`).

Only the graph JSON and raw tensor bytes are then handed to torch's own deserializer.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import file_limits
from ..errors import ModelFormatError

_OPERATOR_OK = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
                "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "invert"}
_MATH_OK = {"ceil", "floor", "trunc", "sqrt", "exp", "log", "log2", "log10", "pow", "fabs",
            "sin", "cos", "tan", "tanh", "sym_sqrt"}
_SYMPY_FUNCTIONS = {"Symbol", "Add", "Mul", "Pow", "StrictLessThan", "LessThan", "StrictGreaterThan",
                    "GreaterThan", "Equality", "Unequality", "Tuple", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv",
                    "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural",
                    "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
                    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
                    "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And",
                    "Or", "Not", "floor", "ceiling", "Integer", "Rational", "Float", "Piecewise",
                    "ITE", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or"}
_TORCH_SYMBOLIC = {"torch.sym_int", "torch.sym_float", "torch.sym_max", "torch.sym_min", "torch.sym_not",
                   "torch.sym_sqrt", "torch._sym_sqrt", "torch.sym_ite", "torch.sym_sum"}
_SYMPY_CONSTANTS = {"oo", "zoo", "nan", "True", "False", "true", "false", "pi", "E"}
_SYM_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                        r"|(?P<str>'[a-z]+\d+')|(?P<op>\*\*|//|<=|>=|==|!=|[-+*/%<>(),&|~=]))")
_SYMBOL = re.compile(r"^[a-z]+\d+$")
_ASSUMPTION_BEFORE = re.compile(r"[(,]\s*[a-z_]+\s*$")
_OPERATORS = {"**", "//", "<=", ">=", "==", "!=", *"-+*/%<>(),&|~="}
#: keyword arguments of sympy's own spelling (``srepr``), which torch writes:
#: Symbol('s0', positive=True, integer=True)
_ASSUMPTIONS = {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
                "nonzero", "zero", "even", "odd", "extended_real", "rational", "infinite", "commutative",
                "precision"}


def load_exported(path: str | Path) -> torch.export.ExportedProgram:
    """The ``ExportedProgram`` in ``path``, read so that no pickle or stored code is executed."""
    path = Path(path)
    source = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except file_limits.ZIP_ERRORS as exc:
        raise ModelFormatError(f"{source}: not a torch.export archive (not a readable zip file: "
                               f"{exc})") from exc
    with zf:
        try:
            file_limits.check_zip(zf, source)
            return _Archive(zf, source).program()
        except file_limits.ZIP_ERRORS as exc:
            raise ModelFormatError(f"{source}: corrupt or truncated torch.export archive ({exc})") from exc


class _Archive:
    """The members of one archive, by their path below the archive's root folder."""

    def __init__(self, zf: zipfile.ZipFile, source: str) -> None:
        from torch.export.pt2_archive import constants as c
        self.c, self.zf, self.source = c, zf, source
        roots = {n.split("/", 1)[0] for n in zf.namelist()}
        if len(roots) != 1 or not all("/" in n for n in zf.namelist()):
            raise ModelFormatError(f"{source}: not a torch.export archive (its members are not "
                                   "under one root folder)")
        self.root = roots.pop() + "/"
        self.names = {n[len(self.root):] for n in zf.namelist()}

    def read(self, name: str, limit: int = file_limits.MAX_MEMBER_BYTES) -> bytes:
        if name not in self.names:
            raise ModelFormatError(f"{self.source}: not a complete torch.export archive ({name} "
                                   "is missing)")
        return file_limits.read_member(self.zf, self.root + name, self.source, limit)

    def json(self, name: str) -> Any:
        return file_limits.load_json(self.read(name, file_limits.MAX_JSON_BYTES), self.source, name)

    def program(self) -> torch.export.ExportedProgram:
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
        c = self.c
        version = self.read(c.ARCHIVE_VERSION_PATH, 64).decode("utf-8", "replace").strip()
        if version != c.ARCHIVE_VERSION_VALUE:
            raise ModelFormatError(f"{self.source}: archive version {version!r} is not the "
                                   f"{c.ARCHIVE_VERSION_VALUE!r} this torch reads; export it again")
        models = sorted(n for n in self.names if n.startswith(c.MODELS_DIR) and n.endswith(".json"))
        if len(models) != 1:
            raise ModelFormatError(f"{self.source}: the archive holds {len(models)} exported "
                                   "programs; deeplift reads archives of exactly one")
        name = models[0][len(c.MODELS_DIR):-len(".json")]
        for legacy in (f"{c.WEIGHTS_DIR}{name}.pt", f"{c.CONSTANTS_DIR}{name}.pt"):
            if legacy in self.names:
                raise ModelFormatError(f"{self.source}: {legacy} is a pickle (an old archive layout), "
                                       "which deeplift never loads; export the model again with "
                                       "torch.export.save")
        program = self.json(models[0])
        _check_graph(program, self.source)
        program["guards_code"] = []  # Python source run only by ExportedProgram.module()
        try:
            serialized = _dict_to_dataclass(schema.ExportedProgram, program)
            weights = self.tensors(c.WEIGHTS_CONFIG_FILENAME_FORMAT.format(name), c.WEIGHTS_DIR, "weight")
            consts = self.tensors(c.CONSTANTS_CONFIG_FILENAME_FORMAT.format(name), c.CONSTANTS_DIR,
                                  "constant")
            sample = self.sample_inputs(c.SAMPLE_INPUTS_FILENAME_FORMAT.format(name))
            with torch.no_grad():
                return ExportedProgramDeserializer(None).deserialize(serialized, weights, consts, sample)
        except ModelFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed JSON fields surface as many types
            raise ModelFormatError(f"{self.source}: malformed torch.export archive "
                                   f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from exc

    def tensors(self, config_name: str, directory: str, what: str) -> dict[str, torch.Tensor]:
        """Weights or constants from raw tensor bytes; anything pickled is refused."""
        from torch._export.serde.serialize import (deserialize_scalar_type, deserialize_size,
                                                   deserialize_storage_offset, deserialize_stride)
        config = self.json(config_name)
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            raise ModelFormatError(f"{self.source}: {config_name} has no 'config' mapping")
        out: dict[str, torch.Tensor] = {}
        flat: dict[str, torch.Tensor] = {}
        for fqn, meta in entries.items():
            if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
                raise ModelFormatError(f"{self.source}: {config_name}: entry {fqn!r} is malformed")
            pathname = meta["path_name"]
            if meta.get("use_pickle") or not pathname.startswith(self._tensor_prefix(what)):
                raise ModelFormatError(
                    f"{self.source}: {what} {fqn!r} is stored as a pickle ({pathname}), which could "
                    "run code; deeplift only reads archives whose tensors are stored raw (a plain "
                    "torch.export.save of an nn.Module)")
            tmeta = meta.get("tensor_meta")
            if not isinstance(tmeta, dict):
                raise ModelFormatError(f"{self.source}: {what} {fqn!r} has no tensor_meta")
            tm = _dict_to_tensor_meta(tmeta)
            dtype = deserialize_scalar_type(tm.dtype)
            size = deserialize_size(tm.sizes)
            stride = deserialize_stride(tm.strides)
            offset = deserialize_storage_offset(tm.storage_offset)
            file_limits.check_array_size(size, torch.empty((), dtype=dtype).element_size(), None,
                                         self.source, f"{what} {fqn!r}")
            if pathname not in flat:
                flat[pathname] = self._flat(directory + pathname, dtype, f"{what} {fqn!r}")
            storage = flat[pathname]
            needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if all(size) else 0
            if min(list(size) + list(stride) + [offset], default=0) < 0 or needed > storage.numel():
                raise ModelFormatError(
                    f"{self.source}: {what} {fqn!r} declares shape {tuple(size)} but the archive "
                    f"holds only {storage.numel()} element(s) for it")
            tensor = torch.as_strided(storage, size, stride, offset)
            out[fqn] = (torch.nn.Parameter(tensor, requires_grad=bool(tm.requires_grad))
                        if meta.get("is_param") else tensor)
        return out

    def _tensor_prefix(self, what: str) -> str:
        c = self.c
        return c.WEIGHT_FILENAME_PREFIX if what == "weight" else c.TENSOR_CONSTANT_FILENAME_PREFIX

    def _flat(self, member: str, dtype: torch.dtype, what: str) -> torch.Tensor:
        raw = self.read(member, file_limits.MAX_ARRAY_BYTES)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) % itemsize:
            raise ModelFormatError(f"{self.source}: {what}: {len(raw)} bytes is not a whole number "
                                   f"of {dtype} elements")
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype)

    def sample_inputs(self, name: str) -> Any:
        """Example inputs, tensors only (``weights_only=True``); anything else is refused."""
        if name not in self.names:
            return None
        raw = self.read(name)
        if not raw:
            return None
        try:
            value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unpickling error means it holds other objects
            raise ModelFormatError(
                f"{self.source}: its sample inputs ({name}) hold objects other than tensors, which "
                "deeplift never unpickles; export the model with tensor example inputs") from exc
        if not isinstance(value, (tuple, dict)):
            raise ModelFormatError(f"{self.source}: its sample inputs ({name}) are a "
                                   f"{type(value).__name__}, not a tuple")
        return value


def _dict_to_tensor_meta(tmeta: dict) -> Any:
    from torch._export.serde import schema
    from torch._export.serde.serialize import _dict_to_dataclass
    return _dict_to_dataclass(schema.TensorMeta, tmeta)


def _walk(obj: Any) -> Iterator[dict]:
    """Every dict inside a JSON value, without recursion."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_graph(program: Any, source: str) -> None:
    """Refuse node targets outside torch's operators and symbolic shapes that are not arithmetic."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ModelFormatError(f"{source}: not a torch.export archive (no graph in its model JSON)")
    for item in _walk(program):
        target = item.get("target")
        if isinstance(target, str) and "inputs" in item and not _safe_target(target):
            raise ModelFormatError(f"{source}: node target {target[:80]!r} is not a torch operator; "
                                   "deeplift only reads programs of torch.ops.aten operators")
        expr = item.get("expr_str")
        if isinstance(expr, str) and not _safe_expression(expr):
            raise ModelFormatError(f"{source}: symbolic shape {expr[:80]!r} is not plain arithmetic "
                                   "over shape symbols; refusing the archive")


def _safe_target(target: str) -> bool:
    if target in _TORCH_SYMBOLIC:
        return True
    parts = target.split(".")
    if parts[:3] == ["torch", "ops", "aten"] and len(parts) == 5:
        return all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts[3:]) and not parts[3].startswith("__")
    if len(parts) == 2 and parts[0] == "_operator":
        return parts[1] in _OPERATOR_OK
    if len(parts) == 2 and parts[0] == "math":
        return parts[1] in _MATH_OK
    return False


def _safe_expression(text: str) -> bool:
    """True when ``text`` is numbers, shape symbols, known sympy functions and operators only
    (no attribute access, subscripts, strings or other names), so ``sympify`` only does arithmetic."""
    if len(text) > 10_000:
        return False
    pos, prev = 0, ""
    for match in _SYM_TOKEN.finditer(text):
        if match.start() != pos:
            return False
        pos = match.end()
        name = match.group("name")
        if name is not None:
            if not (name in _SYMPY_FUNCTIONS or name in _SYMPY_CONSTANTS or _SYMBOL.match(name)
                    or name in _ASSUMPTIONS):
                return False
            prev = name
        else:
            op = match.group("op")
            if op == "(" and prev and prev not in _SYMPY_FUNCTIONS and prev not in _OPERATORS:
                return False
            prev = op or "0"  # a number or a quoted symbol name
            if op == "=" and not _ASSUMPTION_BEFORE.search(text[:match.start()]):
                return False
    return text[pos:].strip() == ""
