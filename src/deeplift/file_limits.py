"""Size limits for what is read from model files, so a hostile or broken file is refused early.

A 2 MB ``.keras`` archive can inflate to gigabytes; a JSON config can nest deeper than the parser
can recurse; an HDF5 dataset or a ``.pt2`` tensor can declare a shape far larger than the bytes
behind it. Every reader of model files goes through these helpers, which raise
:class:`~deeplift.errors.ModelFormatError` naming the file and the limit. The limits are module
attributes so that a user with a legitimately huge model can raise them.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .errors import ModelFormatError

#: largest decompressed size of one zip member (weights of big models included)
MAX_MEMBER_BYTES = 8 << 30
#: largest decompressed size of all members of one zip archive together
MAX_ARCHIVE_BYTES = 16 << 30
#: most members in one archive
MAX_MEMBERS = 100_000
#: largest JSON text (model configs are kilobytes to a few megabytes)
MAX_JSON_BYTES = 64 << 20
#: deepest nesting of JSON arrays/objects
MAX_JSON_DEPTH = 100
#: largest array one weight or tensor may declare
MAX_ARRAY_BYTES = 8 << 30
#: largest compression ratio believed (gzip/deflate cannot exceed about 1032:1)
MAX_RATIO = 1100

#: what zipfile raises for damaged archives (an unknown compression method included)
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError,
              UnicodeDecodeError)
_CHUNK = 1 << 20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"


def check_zip(zf: zipfile.ZipFile, source: str) -> None:
    """Refuse archives with too many members, unsafe member names or an implausible total size."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelFormatError(f"{source}: the archive has {len(infos)} members, more than the "
                               f"limit of {MAX_MEMBERS}")
    total = 0
    for info in infos:
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in info.filename:
            raise ModelFormatError(f"{source}: the archive member name {info.filename!r} points "
                                   "outside the archive (path traversal); refusing the file")
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise ModelFormatError(f"{source}: the archive inflates to {_size(total)}, more than the "
                               f"limit of {_size(MAX_ARCHIVE_BYTES)}")


def read_member(zf: zipfile.ZipFile, name: str, source: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """One member's bytes, stopping as soon as it inflates past ``limit`` or past what its
    header declares (a header can lie), or when its compression ratio is implausible."""
    info = zf.getinfo(name)
    declared = info.file_size
    if declared > limit:
        raise ModelFormatError(f"{source}: {name} inflates to {_size(declared)}, more than the "
                               f"limit of {_size(limit)}")
    if declared > MAX_RATIO * info.compress_size + _CHUNK:
        raise ModelFormatError(f"{source}: {name} claims to inflate {info.compress_size} bytes to "
                               f"{_size(declared)} (a zip bomb?); the limit is {MAX_RATIO}:1")
    parts, got = [], 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                if got > declared or got > limit:
                    raise ModelFormatError(f"{source}: {name} inflates to more than the "
                                           f"{_size(min(declared, limit))} its header declares")
                parts.append(chunk)
    except ZIP_ERRORS as exc:
        raise ModelFormatError(f"{source}: corrupt or truncated archive member {name} "
                               f"({type(exc).__name__}: {exc})") from exc
    return b"".join(parts)


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text (strings skipped), without recursion."""
    text = _STRING.sub(b'""', raw)
    codes = np.frombuffer(text, dtype=np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max()) if len(steps) else 0


def load_json(raw: str | bytes, source: str, what: str) -> Any:
    """``json.loads`` with a size and nesting limit; errors name the file and the part."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_JSON_BYTES:
        raise ModelFormatError(f"{source}: {what} is {_size(len(data))} of JSON, more than the "
                               f"limit of {_size(MAX_JSON_BYTES)}")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ModelFormatError(f"{source}: {what} nests {depth} levels deep, more than the limit "
                               f"of {MAX_JSON_DEPTH}")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"{source}: {what} is not valid JSON ({exc})") from exc


def check_array_size(shape: Any, itemsize: int, stored: int | None, source: str, what: str) -> None:
    """Refuse an array whose declared size is over the limit or not backed by the stored bytes.

    ``stored`` is how many bytes the file holds for it (None: unknown); compressed storage may
    be smaller than the array, but not by more than :data:`MAX_RATIO`.
    """
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: {what} has a malformed shape {shape!r}") from exc
    if any(d < 0 for d in dims):
        raise ModelFormatError(f"{source}: {what} has a negative size in its shape {tuple(dims)}")
    nbytes = int(np.prod(dims, dtype=object)) * int(itemsize) if dims else int(itemsize)
    if nbytes > MAX_ARRAY_BYTES:
        raise ModelFormatError(f"{source}: {what} declares shape {tuple(dims)} ({_size(nbytes)}), "
                               f"more than the limit of {_size(MAX_ARRAY_BYTES)}")
    if stored is not None and nbytes > MAX_RATIO * stored + 4096:
        raise ModelFormatError(f"{source}: {what} declares shape {tuple(dims)} ({_size(nbytes)}) "
                               f"but the file holds only {_size(stored)} for it")
