"""Fault and fuzz tests of the ``deeplift`` command: hostile and broken files, signals, full disks.

Every file is built here. For each case the contract is: exit status 2 and one line starting
``deeplift: error:``, no marker file (the pickled payloads would create one if they ever ran), no
output or temporary file left behind, and no input file changed. The command runs in-process
through ``main(argv)`` (what the console script calls), so the whole module takes seconds.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import pickle
import signal
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import deeplift.io
from deeplift.cli import main
from deeplift.cli import output as cli_output

L = 12  # sequence length of the small models


class Payload:
    """Unpickling this creates the marker file (harmless, but proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------------- builders


def keras_config(input_shape=(L, 4), units=2, extra: dict | None = None) -> dict:
    dense = {"name": "d", "units": units, "use_bias": True, "activation": "linear", **(extra or {})}
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"batch_shape": [None, *input_shape], "name": "input_layer"}},
        {"module": "keras.layers", "class_name": "Flatten", "config": {"name": "f"}},
        {"module": "keras.layers", "class_name": "Dense", "config": dense},
    ]}}


def keras_weights(n_in: int = L * 4, kernel: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        v = h.create_group("layers/dense/vars")
        v["0"] = np.random.default_rng(0).standard_normal((n_in, 2)).astype("float32") \
            if kernel is None else kernel
        v["1"] = np.ones(2, dtype="float32")
    return buf.getvalue()


def write_keras(path: Path, config: bytes | str | None = None, weights: bytes | None = None,
                members: dict | None = None, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.9.0"}))
        zf.writestr("config.json", json.dumps(keras_config()) if config is None else config)
        zf.writestr("model.weights.h5", keras_weights() if weights is None else weights)
        for name, data in (members or {}).items():
            zf.writestr(name, data)
    return path


def write_keras2_h5(path: Path, config: str | None = None, kernel=None) -> Path:
    """A Keras 2 style .h5: JSON architecture in ``model_config``, weights per layer group."""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(keras_config()) if config is None else config
        f.attrs["keras_version"] = "2.15.0"
        weights = f.create_group("model_weights")
        group = weights.create_group("d")
        group.attrs["weight_names"] = [b"d/kernel:0", b"d/bias:0"]
        if kernel is None:
            group["d/kernel:0"] = np.random.default_rng(0).standard_normal((L * 4, 2)).astype("float32")
        else:
            kernel(group)
        group["d/bias:0"] = np.ones(2, dtype="float32")
    return path


def torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(4, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * (L - 2), 2)).eval()


def onehot(n: int = 3, layout: str = "channels_first", seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).integers(0, 4, size=(n, L))
    x = np.eye(4, dtype=np.float32)[idx]  # (n, L, 4)
    return np.ascontiguousarray(x.transpose(0, 2, 1)) if layout == "channels_first" else x


def rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a zip, passing each member (name, bytes) through ``edit`` -> dict of new members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data in edit(info.filename, zin.read(info)).items():
                zout.writestr(name, data)
    return dst


def torch_pickle(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Good models and inputs: a Keras archive on (L, 4), a .pt2 and a module on (4, L)."""
    d = tmp_path_factory.mktemp("hostile")
    x = onehot()
    np.save(d / "x.npy", x)
    np.save(d / "x_cl.npy", onehot(layout="channels_last"))
    (d / "seqs.fa").write_text(">a\nACGTACGTACGT\n>b\nTTGCAAGCTAGC\n")
    (d / "seqs.fa.gz").write_bytes(gzip.compress(b">a\nACGTACGTACGT\n>b\nTTGCAAGCTAGC\n" * 20))
    np.savez_compressed(d / "x.npz", inputs=x)
    with h5py.File(d / "x.h5", "w") as f:
        f.create_dataset("inputs", data=x, compression="gzip")
    write_keras(d / "good.keras")
    write_keras2_h5(d / "good.h5")
    module = torch_model()
    torch.export.save(torch.export.export(module, (torch.from_numpy(x[:2]),)), d / "good.pt2")
    torch.save(module.state_dict(), d / "good_state.pt")
    (d / "hostile_models.py").write_text(
        "import torch\n"
        f"L = {L}\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = torch.nn.Sequential(torch.nn.Conv1d(4, 3, 3), torch.nn.ReLU(),\n"
        "                                        torch.nn.Flatten(), torch.nn.Linear(3 * (L - 2), 2))\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n"
        "def bf16():\n"
        "    torch.manual_seed(0)\n"
        "    return Net().to(torch.bfloat16)\n")
    return {"dir": d, "x": x}


@pytest.fixture()
def run(files, monkeypatch, capsys):
    """Run the command in the fixture folder; returns (status, stdout, stderr)."""
    d = files["dir"]
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))

    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err
    return go


def snapshot(d: Path) -> dict:
    """Every file below ``d`` (hidden ones included) with a hash of its content."""
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def assert_refused(run, d: Path, argv: list[str], expect: str, marker: Path | None = None) -> str:
    """Exit 2, one 'deeplift: error:' line naming ``expect``; nothing created, changed or run."""
    before = snapshot(d)
    status, out, err = run(*argv)
    lines = err.strip().splitlines()
    assert status == 2, f"exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("deeplift: error: "), err
    assert expect in lines[0], lines[0]
    assert "\x1b" not in lines[0] and len(lines[0]) < 600, lines[0]
    assert snapshot(d) == before, "a file was created, removed or modified"
    if marker is not None:
        assert not marker.exists(), "a pickled payload was executed"
    return lines[0]


# --------------------------------------------------------------------------------- .pt2 payloads


def _pt2_member(name: str, suffix: str) -> bool:
    return name.split("/", 1)[1] == suffix


def make_pt2(files, name: str, edit) -> Path:
    return rewrite_zip(files["dir"] / "good.pt2", files["dir"] / name, edit)


def pickled_weight_edit(marker: Path):
    def edit(name, data):
        if _pt2_member(name, "data/weights/model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["0.weight"]["use_pickle"] = True
            return {name: json.dumps(cfg)}
        if _pt2_member(name, "data/weights/weight_0"):
            return {name: torch_pickle(Payload(marker))}
        return {name: data}
    return edit


def _sample_inputs_edit(marker):
    def edit(name, data):
        if _pt2_member(name, "data/sample_inputs/model.pt"):
            return {name: torch_pickle((Payload(marker),))}
        return {name: data}
    return edit


def _opaque_constant_edit(marker):
    def edit(name, data):
        if _pt2_member(name, "data/constants/model_constants_config.json"):
            cfg = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}}}
            root = name.split("/", 1)[0]
            return {name: json.dumps(cfg), f"{root}/data/constants/opaque_obj_0": pickle.dumps(Payload(marker))}
        return {name: data}
    return edit


def _legacy_weights_edit(marker):
    def edit(name, data):
        out = {name: data}
        if _pt2_member(name, "data/weights/model_weights_config.json"):
            out[name.replace("model_weights_config.json", "model.pt")] = torch_pickle(Payload(marker))
        return out
    return edit


def _graph_edit(change):
    def edit(name, data):
        if _pt2_member(name, "models/model.json"):
            program = json.loads(data)
            change(program)
            return {name: json.dumps(program)}
        return {name: data}
    return edit


def _torch_load_target(program) -> None:
    node = next(n for n in program["graph_module"]["graph"]["nodes"] if "relu" in n["target"])
    node["target"] = "torch.load"


def _sympy_payload(marker):
    def change(program):
        program["range_constraints"]["s0"] = {"min_val": 2, "max_val": 10}
        node = program["graph_module"]["graph"]["nodes"][0]
        node["outputs"].append({"as_sym_int": {"as_name": "s0"}})
        program["graph_module"]["graph"]["sym_int_values"]["s0"] = {
            "as_expr": {"expr_str": f"__import__('io').open('{marker}', 'w')", "hint": None}}
    return _graph_edit(change)


PT2_CASES = {
    "pickled weight": (pickled_weight_edit, "stored as a pickle"),
    "pickled sample inputs": (_sample_inputs_edit, "sample inputs"),
    "pickled opaque constant": (_opaque_constant_edit, "stored as a pickle"),
    "legacy pickled weights file": (_legacy_weights_edit, "is a pickle"),
    "sympy expression payload": (_sympy_payload, "is not plain arithmetic"),
}


@pytest.mark.parametrize("case", sorted(PT2_CASES))
def test_pt2_payload_would_run_under_torch_export_load(files, tmp_path, case) -> None:
    """The hostile archives are real: torch's own loader executes each payload."""
    import logging
    marker = tmp_path / "ran_under_torch"
    path = rewrite_zip(files["dir"] / "good.pt2", tmp_path / "evil.pt2", PT2_CASES[case][0](marker))
    logging.disable(logging.CRITICAL)
    try:
        torch.export.load(str(path))
    except Exception:  # noqa: BLE001 - most payloads break the load after they ran
        pass
    finally:
        logging.disable(logging.NOTSET)
    assert marker.exists()


@pytest.mark.parametrize("case", sorted(PT2_CASES))
@pytest.mark.parametrize("command", ["score", "check"])
def test_pt2_with_pickled_payload_is_refused_without_running_it(files, run, case, command) -> None:
    d = files["dir"]
    marker = d / f"marker_{case.replace(' ', '_')}"
    make, expect = PT2_CASES[case]
    path = make_pt2(files, f"evil_{case.replace(' ', '_')}.pt2", make(marker))
    argv = ["score", path.name, "x.npy", "--out", "s.npz"] if command == "score" else ["check", path.name]
    assert_refused(run, d, argv, expect, marker)


def test_pt2_node_target_outside_torch_ops_is_refused(files, run) -> None:
    path = make_pt2(files, "target.pt2", _graph_edit(_torch_load_target))
    assert_refused(run, files["dir"], ["score", path.name, "x.npy"], "'torch.load' is not a torch operator")


def test_pt2_weight_larger_than_its_bytes_is_refused(files, run) -> None:
    def change_sizes(name, data):
        if _pt2_member(name, "data/weights/model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["3.weight"]["tensor_meta"]["sizes"] = [{"as_int": 2}, {"as_int": 10 ** 6}]
            return {name: json.dumps(cfg)}
        return {name: data}
    path = make_pt2(files, "big_weight.pt2", change_sizes)
    assert_refused(run, files["dir"], ["score", path.name, "x.npy"], "declares shape (2, 1000000)")


class _WithConstants(torch.nn.Module):
    """BatchNorm buffers, a non-persistent buffer and a tensor made in forward (lifted constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = torch.nn.Conv1d(4, 3, 3), torch.nn.BatchNorm1d(3)
        self.fc = torch.nn.Linear(3 * (L - 2), 2)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))) * self.scale + torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("dynamic", [False, True])
def test_safe_pt2_reader_matches_torch_export_load(files, tmp_path, dynamic) -> None:
    from deeplift.frontends.torch import convert_exported
    from deeplift.frontends.torch_archive import load_exported
    torch.manual_seed(0)
    module = _WithConstants().eval()
    x = torch.from_numpy(onehot(n=5))
    shapes = ({0: torch.export.Dim.AUTO},) if dynamic else None
    torch.export.save(torch.export.export(module, (x,), dynamic_shapes=shapes), tmp_path / "m.pt2")
    ours, theirs = load_exported(tmp_path / "m.pt2"), torch.export.load(str(tmp_path / "m.pt2"))
    assert set(ours.constants) == set(theirs.constants) and set(ours.state_dict) == set(theirs.state_dict)
    torch.testing.assert_close(convert_exported(ours)(x), theirs.module()(x), rtol=0, atol=0)
    if dynamic:
        x7 = torch.from_numpy(onehot(n=7))
        torch.testing.assert_close(convert_exported(ours)(x7), module(x7), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------- Keras files


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _bomb(member: str, size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr(member, b" " * size)
        if member != "model.weights.h5":
            zf.writestr("model.weights.h5", keras_weights())
    return buf.getvalue()


def _huge_weight() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        v = h.create_group("layers/dense/vars")
        v.create_dataset("0", shape=(10 ** 7, 10 ** 5), dtype="float32", chunks=(1, 1000))
        v["1"] = np.ones(2, dtype="float32")
    return buf.getvalue()


def _keras_cases(d: Path) -> dict:
    good = (d / "good.keras").read_bytes()
    corrupt = bytearray(good)
    for i in range(200, len(corrupt) - 200, 97):
        corrupt[i] ^= 0x5A
    cases = {
        "truncated archive": (good[: len(good) // 2], "corrupt or truncated"),
        "corrupt archive": (bytes(corrupt), "corrupt"),
        "zip bomb config.json": (_bomb("config.json", 200 << 20), "more than the limit of 64 MiB"),
        "deeply nested config": (write_keras(d / "_tmp.keras", config=_deep_json(50_000)).read_bytes(),
                                 "nests 50000 levels deep"),
        "path traversal member": (write_keras(d / "_tmp.keras", members={"../../evil.json": "{}"})
                                  .read_bytes(), "path traversal"),
        "weight larger than the file": (write_keras(d / "_tmp.keras", weights=_huge_weight()).read_bytes(),
                                        "declares shape (10000000, 100000)"),
        "wrongly typed config field": (write_keras(d / "_tmp.keras", config=json.dumps(
            keras_config(extra={"use_bias": "yes"}))).read_bytes(), "layer 'd' (Dense): config field 'use_bias'"),
        "huge declared input length": (write_keras(d / "_tmp.keras", config=json.dumps(
            keras_config(input_shape=(10 ** 12, 4)))).read_bytes(), "declares examples of shape"),
        "not a zip at all": (b"PK\x03\x04" + os.urandom(300), "corrupt"),
        "h5: truncated": ((d / "good.h5").read_bytes()[:3000], "corrupt or truncated"),
        "h5: deeply nested model_config": (write_keras2_h5(d / "_tmp.h5", config=_deep_json(5000))
                                           .read_bytes(), "nests 5000 levels deep"),
        "h5: weight larger than the file": (write_keras2_h5(d / "_tmp.h5", kernel=lambda g: g.create_dataset(
            "d/kernel:0", shape=(10 ** 6, 10 ** 6), dtype="float32", chunks=(1, 1000))).read_bytes(),
            "declares shape (1000000, 1000000)"),
        "h5: wrongly typed config field": (write_keras2_h5(d / "_tmp.h5", config=json.dumps(
            keras_config(extra={"activation": ["relu"]}))).read_bytes(), "config field 'activation'"),
    }
    (d / "_tmp.h5").unlink()
    (d / "_tmp.keras").unlink()
    return cases


@pytest.fixture(scope="module")
def keras_cases(files) -> dict:
    return _keras_cases(files["dir"])


KERAS_CASE_NAMES = ["truncated archive", "corrupt archive", "zip bomb config.json",
                    "deeply nested config", "path traversal member", "weight larger than the file",
                    "wrongly typed config field", "huge declared input length", "not a zip at all",
                    "h5: truncated", "h5: deeply nested model_config", "h5: weight larger than the file",
                    "h5: wrongly typed config field"]


@pytest.mark.parametrize("case", KERAS_CASE_NAMES)
def test_broken_keras_file_is_one_clear_line(files, run, keras_cases, case) -> None:
    data, expect = keras_cases[case]
    name = case.replace(" ", "_").replace(":", "") + (".h5" if case.startswith("h5") else ".keras")
    (files["dir"] / name).write_bytes(data)
    line = assert_refused(run, files["dir"], ["score", name, "x_cl.npy", "--out", "s.npz"], expect)
    assert name in line


def test_keras_bomb_is_refused_before_inflating(files, run, keras_cases) -> None:
    """The 200 MiB member is refused from its header, without allocating it."""
    import tracemalloc
    (files["dir"] / "bomb.keras").write_bytes(keras_cases["zip bomb config.json"][0])
    tracemalloc.start()
    status, _, _ = run("check", "bomb.keras")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert status == 2 and peak < 50 << 20


def _mutants(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    """A truncated copy, a copy with flipped bytes and one with a zeroed block, at random places."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for i in rng.integers(0, len(data), size=8):
        flipped[i] ^= int(rng.integers(1, 256))
    zeroed = bytearray(data)
    size = min(64, len(data) // 4)
    start = int(rng.integers(0, len(data) - size))
    zeroed[start:start + size] = bytes(size)
    return [("truncated", data[: int(rng.integers(1, len(data)))]), ("flipped", bytes(flipped)),
            ("zeroed", bytes(zeroed))]


FUZZED = {"good.keras": ("score", "{}", "x_cl.npy"), "good.pt2": ("score", "{}", "x.npy"),
          "good.h5": ("score", "{}", "x_cl.npy"),
          "x.npy": ("score", "good.pt2", "{}"), "x.npz": ("score", "good.pt2", "{}"),
          "x.h5": ("score", "good.pt2", "{}"), "seqs.fa.gz": ("score", "good.pt2", "{}")}


@pytest.mark.parametrize("original", sorted(FUZZED))
@pytest.mark.parametrize("seed", range(int(os.environ.get("FUZZ_SEEDS", 3))))
def test_fuzzed_files_never_crash(files, run, original, seed) -> None:
    """Damaged copies either still score (the damage hit unused bytes) or fail in one clear line."""
    d = files["dir"]
    for kind, data in _mutants((d / original).read_bytes(), seed):
        name = f"fuzz_{kind}_{seed}_{original}"
        (d / name).write_bytes(data)
        before = snapshot(d)
        argv = [a.format(name) for a in FUZZED[original]]
        status, out, err = run(*argv, "--out", "fuzz.npz", "--quiet")
        lines = err.strip().splitlines()
        if status == 0:
            (d / "fuzz.npz").unlink()
        else:
            assert status == 2 and len(lines) == 1 and lines[0].startswith("deeplift: error: "), \
                f"{kind} {name}: exit {status}: {err}"
            assert snapshot(d) == before
        (d / name).unlink()


@pytest.mark.parametrize("role", ["model", "inputs", "plot"])
def test_hdf5_file_that_makes_libhdf5_loop_is_refused(files, run, monkeypatch, role) -> None:
    """A 64-byte zeroed block (found by the fuzz test) sends libhdf5 into an endless loop while
    reading the model_config attribute; the file is walked in a child process with a time limit."""
    from deeplift.cli import hdf5_probe
    d = files["dir"]
    monkeypatch.setattr(hdf5_probe, "TIMEOUT", 2.0)
    (d / "loops.h5").write_bytes(_mutants((d / "good.h5").read_bytes(), 36)[2][1])
    argv = {"model": ["score", "loops.h5", "x_cl.npy"], "inputs": ["score", "good.pt2", "loops.h5"],
            "plot": ["plot", "loops.h5"]}[role]
    assert_refused(run, d, argv, "did not finish reading it within 2 s")


def test_hdf5_file_that_crashes_libhdf5_is_refused(files, run, monkeypatch) -> None:
    from deeplift.cli import hdf5_probe
    monkeypatch.setattr(hdf5_probe, "_WALK", "import os; os.abort()")  # stands in for a segfault
    assert_refused(run, files["dir"], ["score", "good.h5", "x_cl.npy"], "crashed reading it (signal 6)")


# --------------------------------------------------------------------------------- other inputs


def test_pickled_npy_inputs_are_refused_without_running(files, run) -> None:
    d = files["dir"]
    marker = d / "marker_npy"
    np.save(d / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    assert_refused(run, d, ["score", "good.pt2", "evil.npy"], "evil.npy", marker)


def test_pickled_weights_are_refused_without_running(files, run) -> None:
    d = files["dir"]
    marker = d / "marker_weights"
    torch.save({"body.0.weight": Payload(marker)}, d / "evil_state.pt")
    line = assert_refused(run, d, ["score", "hostile_models:Net", "x.npy", "--weights", "evil_state.pt"],
                          "holds objects other than tensors", marker)
    assert len(line) < 300 and "GLOBAL io.open" not in line  # not 700 characters of torch advice


def test_binary_fasta_is_refused(files, run) -> None:
    d = files["dir"]
    (d / "binary.fa").write_bytes(bytes(range(256)) * 4)
    assert_refused(run, d, ["score", "good.pt2", "binary.fa"], "binary.fa")


def test_corrupt_gzip_fasta_is_refused(files, run) -> None:
    d = files["dir"]
    data = bytearray(gzip.compress(b">a\nACGTACGTACGT\n" * 200))
    data[30:40] = b"\xff" * 10
    (d / "corrupt.fa.gz").write_bytes(bytes(data))
    assert_refused(run, d, ["score", "good.pt2", "corrupt.fa.gz"], "corrupt.fa.gz")


@pytest.mark.parametrize("dtype", ["int64", "bool", "complex64"])
def test_non_float_inputs_to_a_module_are_scored_or_named(files, run, dtype) -> None:
    d = files["dir"]
    np.save(d / f"x_{dtype}.npy", files["x"].astype(dtype))
    if dtype == "complex64":
        assert_refused(run, d, ["score", "hostile_models:Net", f"x_{dtype}.npy"], "complex64")
        return
    status, out, err = run("score", "hostile_models:Net", f"x_{dtype}.npy", "--out", f"s_{dtype}.npz",
                           "--quiet")
    assert status == 0, err
    (d / f"s_{dtype}.npz").unlink()


def test_bfloat16_module_with_dinuc_shuffled_references(files, run) -> None:
    d = files["dir"]
    status, out, err = run("score", "hostile_models:bf16", "x.npy", "--references", "dinuc-shuffle",
                           "--n-references", "2", "--out", "bf16.npz", "--quiet")
    assert status == 0, err
    saved = deeplift.io.load_scores(d / "bf16.npz")
    assert saved["scores"].shape == files["x"].shape and np.isfinite(saved["scores"]).all()
    (d / "bf16.npz").unlink()


def test_h5_inputs_declaring_more_than_they_hold_are_refused(files, run) -> None:
    d = files["dir"]
    with h5py.File(d / "huge.h5", "w") as f:
        f.create_dataset("inputs", shape=(10 ** 9, 4, L), dtype="float32", chunks=(1, 4, L))
    assert_refused(run, d, ["score", "good.pt2", "huge.h5"], "declares shape (1000000000, 4, 12)")


def test_allocation_failure_while_scoring_is_one_line(files, run, monkeypatch) -> None:
    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr("deeplift.plan.execute", no_memory)
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--method", "integrated_gradients"],
                   "out of memory; lower --batch-size")


def test_model_too_large_for_memory_is_not_blamed_on_batch_size(files, run, monkeypatch) -> None:
    def no_memory(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr("deeplift.load", no_memory)
    line = assert_refused(run, files["dir"], ["score", "good.keras", "x_cl.npy"], "too large to load")
    assert "batch-size" not in line


# --------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("what", ["model", "inputs", "symlink to inputs", "hard link to inputs",
                                  "references", "weights"])
def test_out_naming_an_input_of_the_run_is_refused(files, run, what) -> None:
    d = files["dir"]
    # --out must end in .npz/.h5, so each input of the run is given under such a name
    np.savez(d / "inputs.npz", inputs=files["x"])
    np.savez(d / "refs.npz", inputs=np.zeros_like(files["x"]))
    torch.save(torch_model().state_dict(), d / "state.h5")
    for name, make in (("inputs_link.npz", os.symlink), ("inputs_hard.npz", os.link)):
        if not (d / name).exists():
            make(d / "inputs.npz", d / name)
    argv = {
        "model": ["score", "model.h5", "x_cl.npy", "--out", "model.h5"],
        "inputs": ["score", "good.pt2", "inputs.npz", "--out", "inputs.npz"],
        "symlink to inputs": ["score", "good.pt2", "inputs.npz", "--out", "inputs_link.npz"],
        "hard link to inputs": ["score", "good.pt2", "inputs.npz", "--out", "inputs_hard.npz"],
        "references": ["score", "good.pt2", "x.npy", "--references", "refs.npz", "--out", "refs.npz"],
        "weights": ["score", "hostile_models:Net", "x.npy", "--weights", "state.h5", "--out", "state.h5"],
    }[what]
    (d / "model.h5").write_bytes((d / "good.keras").read_bytes())  # the format is sniffed from the bytes
    assert_refused(run, d, argv, "of this run")


def test_genome_out_naming_the_model_is_refused(files, run) -> None:
    d = files["dir"]
    (d / "model.h5").write_bytes((d / "good.keras").read_bytes())
    (d / "g.fa").write_text(">chr1\n" + "ACGT" * 50 + "\n")
    (d / "r.bed").write_text("chr1\t10\t30\n")
    assert_refused(run, d, ["score", "model.h5", "--genome", "g.fa", "--regions", "r.bed", "--width", str(L),
                            "--out", "model.h5"], "is the model model.h5 of this run")


def test_out_on_a_special_file_system_is_refused(files, run) -> None:
    if cli_output._file_system_type(Path("/proc")) != "proc":
        pytest.skip("no /proc mount here")
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--out", "/proc/scores.npz"],
                   "special file system proc")


def test_out_below_a_file_is_refused(files, run) -> None:
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--out", "x.npy/scores.npz"],
                   "is a file, not a directory")


def test_out_in_a_read_only_folder_is_refused_before_scoring(files, run, monkeypatch) -> None:
    def no_probe(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(cli_output.tempfile, "mkstemp", no_probe)
    monkeypatch.setattr("deeplift.plan.execute", _never_called)
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--out", "ro.npz"], "read-only")


def _never_called(*args, **kwargs):
    raise AssertionError("scoring started although the output location is unusable")


def test_too_little_free_space_is_refused_before_scoring(files, run, monkeypatch) -> None:
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_flag, self.f_frsize, self.f_bavail = st.f_flag, 1, 100
    monkeypatch.setattr(cli_output.os, "statvfs", lambda p: Full(real(p)))
    monkeypatch.setattr("deeplift.plan.execute", _never_called)
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--out", "full.npz"], "free but")


class _FullDisk(io.FileIO):
    """A file whose writes fail with ENOSPC after the first few bytes."""

    def write(self, data):
        super().write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_disk_full_while_saving_is_one_line_and_leaves_no_file(files, run, monkeypatch, suffix) -> None:
    monkeypatch.setattr(deeplift.io, "open", lambda p, mode="r": _FullDisk(p, mode.replace("b", "")),
                        raising=False)
    assert_refused(run, files["dir"], ["score", "good.pt2", "x.npy", "--out", "full" + suffix],
                   "no space left on the device")


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 16 kB tmpfs (needs root; skipped elsewhere), unmounted afterwards."""
    import subprocess
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(*options: str) -> Path:
        opts = ",".join(("size=16k", *options))
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (not root?)")
        return mnt
    yield mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("case", ["too small", "full during the save .npz", "full during the save .h5",
                                  "read-only"])
def test_real_small_or_read_only_file_system(files, run, small_tmpfs, monkeypatch, case) -> None:
    d = files["dir"]
    np.save(d / "many.npy", onehot(n=600, seed=1))
    mnt = small_tmpfs("ro") if case == "read-only" else small_tmpfs()
    out = mnt / ("s.h5" if case.endswith(".h5") else "s.npz")
    expect = {"too small": "free but", "read-only": "read-only"}.get(case, "no space left on the device")
    if case.startswith("full"):  # let the preflight pass so that the write itself fails
        monkeypatch.setattr("deeplift.cli.score.check_free_space", lambda *a: None)
    else:
        monkeypatch.setattr("deeplift.plan.execute", _never_called)
    assert_refused(run, d, ["score", "good.pt2", "many.npy", "--out", str(out), "--quiet", "--batch-size", "600"],
                   expect)
    assert list(mnt.iterdir()) == []
    (d / "many.npy").unlink()


def test_sigterm_during_the_save_leaves_no_file(files, run, monkeypatch) -> None:
    def killed(fd):
        # raise_signal: to this thread, handled before it returns (os.kill to the process may
        # land on one of torch's worker threads and be handled only after the next line ran)
        signal.raise_signal(signal.SIGTERM)
    monkeypatch.setattr(deeplift.io.os, "fsync", killed)
    d = files["dir"]
    before = snapshot(d)
    status, _, err = run("score", "good.pt2", "x.npy", "--out", "term.npz")
    assert status == 128 + signal.SIGTERM and "terminated" in err
    assert snapshot(d) == before


def test_sigint_during_scoring_leaves_no_file(files, run, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # (see the test above)
        raise AssertionError("the signal should have interrupted scoring")
    monkeypatch.setattr("deeplift.plan.execute", interrupted)
    d = files["dir"]
    before = snapshot(d)
    status, _, err = run("score", "good.pt2", "x.npy", "--out", "int.npz")
    assert status == 130 and "interrupted" in err
    assert snapshot(d) == before


def test_sigterm_to_a_real_process_during_scoring_leaves_no_file(files, tmp_path) -> None:
    import subprocess
    import sys
    d = tmp_path
    (d / "good.pt2").write_bytes((files["dir"] / "good.pt2").read_bytes())
    np.save(d / "many.npy", np.repeat(files["x"], 400, axis=0))
    env = dict(os.environ, PYTHONPATH=str(Path(deeplift.io.__file__).parents[1]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "deeplift", "score", "good.pt2", "many.npy", "--method",
                             "integrated_gradients", "--steps", "4000", "--batch-size", "64",
                             "--out", "s.npz"], cwd=d, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the run description is printed just before scoring starts
            if line.startswith("method "):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == f"deeplift: terminated by signal {int(signal.SIGTERM)}"
    assert sorted(p.name for p in d.iterdir()) == ["good.pt2", "many.npy"]


def test_output_gets_umask_permissions_and_overwrite_is_reported(files, run) -> None:
    d = files["dir"]
    old = os.umask(0o022)
    try:
        status, out, err = run("score", "good.pt2", "x.npy", "--out", "perm.npz", "--quiet")
        assert status == 0, err
        assert (os.stat(d / "perm.npz").st_mode & 0o777) == 0o644
        assert "replaced the existing" not in out
        status, out, err = run("score", "good.pt2", "x.npy", "--out", "perm.npz", "--quiet")
        assert status == 0 and "replaced the existing perm.npz" in out
    finally:
        os.umask(old)
        (d / "perm.npz").unlink(missing_ok=True)


# --------------------------------------------------------------------------------- plot


def _scores_file(path: Path, scores, inputs, meta) -> Path:
    np.savez(path, arr_0=scores, scores=scores, inputs=inputs, metadata_json=np.array(json.dumps(meta)))
    return path


@pytest.mark.parametrize("case", ["shape mismatch", "no examples", "metadata is a list",
                                  "deeply nested metadata"])
def test_plot_refuses_inconsistent_files(files, run, case) -> None:
    d = files["dir"]
    x = files["x"]
    meta = {"targets": [0], "target_axis": False, "method": "rescale"}
    scores, inputs, expect = x, x, None
    if case == "shape mismatch":
        scores, expect = x[:, :, :-1], "disagree in shape"
    elif case == "no examples":
        scores, inputs, expect = x[:0], x[:0], "holds no examples"
    elif case == "metadata is a list":
        meta, expect = [1, 2], "metadata is a list"
    name = case.replace(" ", "_") + ".npz"
    path = _scores_file(d / name, scores, inputs, meta)
    if case == "deeply nested metadata":
        np.savez(path, scores=x, inputs=x, metadata_json=np.array(_deep_json(100_000)))
        expect = "nests 100000 levels deep"
    assert_refused(run, d, ["plot", name, "--out-dir", "plots"], expect)
    assert not (d / "plots").exists()


def test_sigint_during_scoring_leaves_no_file_when_the_host_process_ignores_it(files, run,
                                                                              monkeypatch) -> None:
    # a process that calls the command's main() may have replaced SIGINT's handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        test_sigint_during_scoring_leaves_no_file(files, run, monkeypatch)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # put back afterwards
    finally:
        signal.signal(signal.SIGINT, previous)
