"""The speed machinery changes no number: fused rule kernels against the op-by-op rules, passes
split by size against one pass, in-place accumulation against fresh sums, values released as the
backward goes against values kept — plus the fallback and the "auto" policy of ``fuse``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from torch import nn

import deeplift
from deeplift import engine, fusion
from deeplift.errors import InputError
from deeplift.layers import base
from deeplift.layers.activations import Activation
from deeplift.plan import make_plan
from random_models import RandomChooser, build_model, random_inputs, single_thread

DEEPLIFT = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class ResidualNet(nn.Module):
    """Conv stem, two residual ReLU blocks, a sigmoid and a tanh branch, max pool, dense head:
    every fused rule (Rescale, RevealCancel, the linear split) and a residual sum of two paths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, 6, 5, padding=2)
        self.blocks = nn.ModuleList(nn.Conv1d(6, 6, 3, padding=d, dilation=d) for d in (1, 2))
        self.gate = nn.Conv1d(6, 6, 1)
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(6 * 8, 5)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for conv in self.blocks:
            h = h + torch.relu(conv(h))
        h = torch.sigmoid(self.gate(h)) + torch.tanh(h)
        return self.head(self.pool(h).flatten(1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ResidualNet().double().eval()


@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 4, 16, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def refs(x):
    g = torch.Generator().manual_seed(2)  # 3 references per example: the per-pair gather path
    return torch.randn(5, 3, 4, 16, generator=g, dtype=torch.float64)


_COMPILE_PROBE: list[str] = []


def _compiler_or_skip():
    """Skip (saying why) where torch.compile cannot build a kernel at all — no C++ compiler or
    Python headers; the eager fallback is tested by test_a_kernel_that_cannot_compile_runs_eagerly."""
    if not _COMPILE_PROBE:
        try:
            torch.compile(lambda t: t * 2 + 1, dynamic=True)(torch.ones(3))
            _COMPILE_PROBE.append("")
        except Exception as error:  # noqa: BLE001
            _COMPILE_PROBE.append(f"{type(error).__name__}: {str(error).strip()[:200]}")
    if _COMPILE_PROBE[0]:
        pytest.skip(f"torch.compile cannot build CPU kernels on this machine ({_COMPILE_PROBE[0]})")


@pytest.mark.parametrize("method", DEEPLIFT)
def test_fused_kernels_give_the_op_by_op_scores(net, x, refs, method):
    _compiler_or_skip()
    eager = deeplift.attribute(net, x, refs, method=method, target="all", fuse=False)
    fused, delta = deeplift.attribute(net, x, refs, method=method, target="all", fuse=True,
                                      return_delta=True)
    torch.testing.assert_close(fused, eager, rtol=1e-9, atol=1e-12)
    assert float(delta.abs().max()) < 1e-10  # summation-to-delta, float64
    used = {name: s for name, s in fusion.status().items() if s != "not used yet"}
    assert used and all(s == "compiled" for s in used.values()), used


def test_fused_kernels_on_one_shared_reference_and_one_target(net, x):
    _compiler_or_skip()
    r = torch.zeros_like(x[:1])
    for method in DEEPLIFT:
        eager = deeplift.attribute(net, x, r, method=method, fuse=False)
        fused = deeplift.attribute(net, x, r, method=method, fuse=True)
        torch.testing.assert_close(fused, eager, rtol=1e-9, atol=1e-12)


def test_a_kernel_that_cannot_compile_runs_eagerly(monkeypatch, net, x, refs):
    def no_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")
        return fail
    monkeypatch.setattr(fusion, "_KERNELS", {})
    monkeypatch.setattr(torch, "compile", no_compiler)
    eager = deeplift.attribute(net, x, refs, method="reveal_cancel", fuse=False)
    fell_back = deeplift.attribute(net, x, refs, method="reveal_cancel", fuse=True)
    torch.testing.assert_close(fell_back, eager, rtol=0, atol=0)
    status = fusion.status()
    assert status and all(s == "RuntimeError: InductorError: no working C++ compiler found"
                          for s in status.values()), status


def test_an_error_of_the_arguments_is_not_taken_for_a_compiler_failure(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    k = fusion.FusedKernel(lambda a, b: a + b, "add")
    with pytest.raises(RuntimeError, match="size"):
        k(True, torch.ones(2), torch.ones(3))
    assert k.failure is None
    torch.testing.assert_close(k(True, torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))


def _scaled_sum(scale, a, b):
    return scale * a + b


def test_every_kind_of_arguments_gets_a_compiled_variant_of_its_own(monkeypatch):
    """Kernels made from one function (partials of it) and called with many ranks and dtypes
    compile once per kind of arguments each: none shares the compiler's per-code-object cache,
    whose limit of eight recompilations would otherwise turn the rest silently eager."""
    from functools import partial

    from torch._dynamo.testing import CompileCounter
    counter = CompileCounter()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counter, **kw))
    kernels = [fusion.FusedKernel(partial(_scaled_sum, s), f"scaled sum {s}") for s in (2.0, 3.0)]
    shapes = [(3,), (3, 4), (3, 4, 5), (2, 3, 4, 5), (1, 4), (1, 4, 5)]
    calls = 0
    for k in kernels:
        for dtype in (torch.float32, torch.float64):
            for shape in shapes:
                a, b = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
                for _ in range(2):  # the second call reuses the variant
                    torch.testing.assert_close(k(True, a, b), k.fn(a, b), rtol=0, atol=0)
                calls += 1
    assert counter.frame_count == calls == 24
    assert all(k.failure is None and len(k._variants) == 12 for k in kernels)


def test_auto_fuses_once_the_work_would_repay_compiling(monkeypatch):
    monkeypatch.setattr(fusion, "_work_done", 0)
    monkeypatch.setattr(fusion, "AUTO_WORK", 100)
    assert [fusion.resolve("auto", 30) for _ in range(3)] == [False, False, False]
    assert fusion.resolve("auto", 30) == "large"  # 90 done + 30 >= 100
    assert fusion.resolve("auto", 500) == "large"
    assert fusion.resolve("auto", 0) is False  # gradient methods: nothing to fuse
    assert fusion.resolve(True, 0) is True and fusion.resolve(False, 10 ** 12) is False
    assert not fusion.should_fuse("large", fusion.AUTO_MIN_ELEMENTS - 1)
    assert fusion.should_fuse("large", fusion.AUTO_MIN_ELEMENTS)
    assert fusion.should_fuse(True, 1) and not fusion.should_fuse(False, 10 ** 9)


def test_a_small_call_never_compiles(monkeypatch, net, x, refs):
    monkeypatch.setattr(fusion, "_work_done", 0)

    def refuse(self, *signature):
        raise AssertionError("a small call compiled a kernel")
    monkeypatch.setattr(fusion.FusedKernel, "_compiled_fn", refuse)
    deeplift.attribute(net, x, refs, method="reveal_cancel", target="all")


def test_fuse_must_be_true_false_or_auto(net, x):
    with pytest.raises(InputError, match="fuse must be True, False or 'auto'"):
        deeplift.attribute(net, x, method="rescale", fuse="yes")


# ---------------------------------------------------------------------------------------------
# passes and batches split by size, memory handed over


@pytest.mark.parametrize("method", DEEPLIFT + ["gradient", "integrated_gradients"])
def test_passes_and_batches_split_by_size_give_the_same_scores(monkeypatch, net, x, refs, method):
    r = None if method == "gradient" else refs
    whole = deeplift.attribute(net, x, r, method=method, target="all", fuse=False)
    monkeypatch.setattr(engine, "PASS_BYTES", 1)  # one row per batch, one target per pass
    split = deeplift.attribute(net, x, r, method=method, target="all", fuse=False)
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("target", [0, "all"])
def test_a_split_is_handed_over_only_where_nothing_reads_it_later(monkeypatch, net, x, refs,
                                                                   target):
    """RevealCancel's fused factors overwrite the split of their input (and its values leave
    the pass) only when computed in the last backward and when the input is a convolution read
    by that nonlinearity alone: the gate's sigmoid, not the tanh (its input is a sum) nor the ReLUs
    (the tanh's input split asked for their parts first, which the factors then come from).
    Scores equal the op-by-op ones, also with the per-layer table, which reads splits later."""
    _compiler_or_skip()
    calls = []
    take_split = engine.PassState.take_split

    def spy(self, name, reader):
        split, owned = take_split(self, name, reader)
        calls.append((type(self.model.layers[name]).__name__, type(reader).__name__, owned,
                      self.final_backward))
        return split, owned
    monkeypatch.setattr(engine.PassState, "take_split", spy)
    monkeypatch.setattr(engine, "PASS_BYTES", 1)  # several passes: only the last hands over
    eager = deeplift.attribute(net, x, refs, method="reveal_cancel", target=target, fuse=False)
    eager_calls = calls[:]
    calls.clear()
    fused = deeplift.attribute(net, x, refs, method="reveal_cancel", target=target, fuse=True)
    torch.testing.assert_close(fused, eager, rtol=1e-9, atol=1e-12)
    assert calls == eager_calls  # (op by op, the split leaves the pass early; fused, it is reused)
    handed = {(inp, reader) for inp, reader, owned, final in calls if owned}
    # several passes: the first, not the last, computes the factors, so none is handed over
    assert handed == ({("Conv", "Sigmoid")} if target == 0 else set())
    assert ("Add", "Tanh", False, target == 0) in calls
    calls.clear()
    table = deeplift.attribute(net, x, refs, method="reveal_cancel", target=target, fuse=True,
                               return_node_deltas=True)
    torch.testing.assert_close(table[0], eager, rtol=1e-9, atol=1e-12)
    assert calls and not any(owned for _, _, owned, _ in calls)


@pytest.mark.parametrize("fuse,piece", [(False, 1 << 17), (False, 64), (True, 64)])
def test_the_split_written_into_the_spread_changes_no_bit(monkeypatch, fuse, piece):
    """``split_by_spread`` and ``split_by_spread_of`` (Δ⁺ into ``spread``, Δ⁻ into the
    difference), eager — in one go or piece by piece (64 elements: the last piece shorter) —
    and compiled, against the split's definition: ``½(total ± c)`` with ``c = |total|`` where it
    is within rounding of the spread (every term of one sign: one part exactly 0, the other
    exactly total), else ``c = spread`` — a NaN spread stays NaN."""
    if fuse:
        _compiler_or_skip()
    monkeypatch.setattr(base, "PIECE", piece)
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(4, 6, 50, generator=g, dtype=torch.float64)
    index = torch.tensor([0, 0, 1, 2, 3, 3, 2])
    r = torch.randn(7, 6, 50, generator=g, dtype=torch.float64)
    total = rows.index_select(0, index) - r
    spread = total.abs() + torch.rand(7, 6, 50, generator=g, dtype=torch.float64)
    spread[:, :, :10] = total[:, :, :10].abs()  # a single-signed sum: one part is exactly 0
    spread[:, :, 10:20] = total[:, :, 10:20].abs() * (1 + 4 * torch.finfo(torch.float64).eps)
    spread[0, 0, 20] = float("nan")
    k = 1 - 2 * 9 * torch.finfo(torch.float64).eps
    a = total.abs()
    pos = 0.5 * (total + torch.where(a >= k * spread, a, spread))
    expected = pos, total - pos
    assert bool((pos[:, :, :20] == 0).logical_or(expected[1][:, :, :20] == 0).all())
    assert bool((pos[:, :, 21:] != 0).logical_and(expected[1][:, :, 21:] != 0).all())
    assert pos[0, 0, 20].isnan() and expected[1][0, 0, 20].isnan()

    def same(parts):
        return all(torch.equal(p.nan_to_num(), e.nan_to_num()) and torch.equal(p.isnan(), e.isnan())
                   for p, e in zip(parts, expected))
    assert same(base.split_by_spread(total.clone(), spread.clone(), 9, fuse))
    assert same(base.split_by_spread_of((rows, index), r, spread.clone(), 9, fuse))
    # the rows gathered already and the caller's to lose: Δ⁻ is written into them
    per_pair = rows.index_select(0, index)
    parts = base.split_by_spread_of((per_pair, None), r, spread.clone(), 9, fuse, into_x=True)
    assert same(parts) and parts[1].data_ptr() == per_pair.data_ptr()


def test_rule_work_goes_piece_by_piece_on_cpu_only():
    """On CPU a layer's op-by-op rule work goes ~``PIECE`` elements at a time (at least a row);
    on another device each op is a kernel launch of its own and the caching allocator keeps its
    blocks: one piece."""
    pieces = base.row_pieces((64, 64, 1000), torch.device("cpu"))
    assert len(pieces) == 32 and pieces[0] == slice(0, 2) and pieces[-1] == slice(62, 64)
    assert base.row_pieces((3, 10 ** 6), torch.device("cpu")) == [slice(0, 1), slice(1, 2),
                                                                 slice(2, 3)]
    assert base.row_pieces((64, 64, 1000), torch.device("meta")) == [slice(0, 64)]


@pytest.mark.parametrize("piece", [1 << 17, 50])
@pytest.mark.parametrize("shared", [False, True])
def test_reveal_cancel_factors_in_place_change_no_bit(monkeypatch, net, x, refs, piece, shared):
    """The op-by-op factors — computed piece by piece (50 elements: a piece is part of a row,
    so a row each; one piece), into the split handed over (one target) or into tensors of their
    own (all targets, several passes) — equal those of the four-part computation bit for bit,
    near-zero limits included (one reference per example is the example itself; or one
    reference shared by all, equal to the first example on half of the sequence)."""
    monkeypatch.setattr(base, "PIECE", piece)
    monkeypatch.setattr(engine, "PASS_BYTES", 4096)  # "all": several passes, nothing handed over
    if shared:
        r = refs[:1, 0].clone()
        r[..., : x.shape[-1] // 2] = x[:1, ..., : x.shape[-1] // 2]
    else:
        r = refs.clone()
        r[:, 0] = x
    in_place = deeplift.attribute(net, x, r, method="reveal_cancel", target="all", fuse=False)
    one_target = deeplift.attribute(net, x, r, method="reveal_cancel", target=0, fuse=False)
    monkeypatch.setattr(Activation, "_reveal_cancel_factors_eager",
                        lambda self, state: self._reveal_cancel(state)[2:])
    parts = deeplift.attribute(net, x, r, method="reveal_cancel", target="all", fuse=False)
    assert torch.equal(in_place, parts)
    assert torch.equal(one_target, parts[:, 0])


@pytest.mark.parametrize("method", DEEPLIFT)
@pytest.mark.parametrize("batch_size", [3, 15])
def test_differences_a_run_of_pairs_at_a_time_change_no_bit(monkeypatch, net, x, refs, method,
                                                            batch_size):
    """Several references per example: each run of one example's pairs takes its differences
    from a broadcast of that example's row, a block of equal runs at a time, not from a gather
    of every pair's; the scores are those of the gather bit for bit, with runs cut by the batch
    (5 references, 3 pairs: runs of 2 then 1, of 1 then 2, and of 3, one example that
    broadcasts; 15: blocks of 3 and 2 whole examples), and it happens."""
    refs = torch.cat([refs, refs[:, :2]], 1)
    runs = []
    x_runs = engine.PassState._x_runs

    def recording(self, name):
        found = x_runs(self, name)
        runs.extend(found or ())
        return found
    monkeypatch.setattr(engine.PassState, "_x_runs", recording)
    monkeypatch.setattr(engine, "RUN_ELEMENTS", 10 ** 9)  # never: the gather
    gathered = deeplift.attribute(net, x, refs, method=method, target="all", fuse=False,
                                  batch_size=batch_size)
    assert not runs
    monkeypatch.setattr(engine, "RUN_ELEMENTS", 1)  # always: a run at a time
    by_runs = deeplift.attribute(net, x, refs, method=method, target="all", fuse=False,
                                 batch_size=batch_size)
    assert torch.equal(gathered, by_runs)
    blocks = {(n_examples, per_example) for _, n_examples, per_example, _ in runs}
    # 3 pairs of 5 examples with 5 references each: 0 0 0 | 0 0 1 | 1 1 1 | 1 2 2 | 2 2 2 | ...
    assert blocks == ({(1, 2), (1, 1)} if batch_size == 3 else {(3, 5), (2, 5)})


@pytest.mark.parametrize("method", DEEPLIFT)
@pytest.mark.parametrize("quirks", [False, True])
def test_near_zero_limits_at_the_masked_elements_alone_change_no_bit(monkeypatch, net, x, refs,
                                                                   method, quirks):
    """Where |Δx| is near zero the op-by-op rules put in the limit computed at those elements
    only (few of them) or everywhere (many): both give the same bits. Half the references equal
    their example in one half of the sequence, so a mask covers some elements of a tensor."""
    from deeplift.layers import activations

    r = refs.clone()
    r[:, : r.shape[1] // 2, :, : x.shape[-1] // 2] = x[:, None, :, : x.shape[-1] // 2]
    scores = []
    # never / always at the masked elements alone, found by a mask or (blocks of 4 elements:
    # these tensors are small) by the minimum of each block
    for fraction, block in ((0.0, 1 << 12), (1.0, 1 << 12), (1.0, 4)):
        monkeypatch.setattr(activations, "_SPARSE_FRACTION", fraction)
        monkeypatch.setattr(activations, "_BLOCK", block)
        scores.append(deeplift.attribute(net, x, r, method=method, target="all", fuse=False,
                                         original_quirks=quirks))
    assert torch.equal(scores[0], scores[1]) and torch.equal(scores[0], scores[2])


@pytest.mark.parametrize("method", DEEPLIFT + ["gradient"])
def test_accumulating_in_place_changes_no_bit(monkeypatch, net, x, refs, method):
    r = None if method == "gradient" else refs
    in_place = deeplift.attribute(net, x, r, method=method, target="all", fuse=False)
    monkeypatch.setattr(engine, "_fresh_flags", lambda layer, grads, incoming: [False] * len(grads))
    monkeypatch.setattr(engine, "_accumulate", lambda a, a_owned, b, b_fresh: engine._add(a, b))
    monkeypatch.setattr(engine.PassState, "owns_incoming", property(lambda self: False,
                                                                     lambda self, v: None),
                        raising=False)
    fresh = deeplift.attribute(net, x, r, method=method, target="all", fuse=False)
    assert torch.equal(in_place, fresh)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_one_target_per_pass_gives_the_scores_of_one_pass_on_random_models(seed):
    """Passes after the first read only the rule state it cached (the values leave as the
    backward goes, ``Layer.rereads_values``): on the random-model zoo, every method scored one
    target per pass equals all targets in one pass."""
    net, shape, desc = build_model(RandomChooser(seed), seed)
    note("\n".join(desc))
    x, r = random_inputs(shape, 3, seed)
    model = deeplift.convert(net, x)
    methods = DEEPLIFT + ["gradient", "gradient_x_input", "guided_backprop", "deconvnet"]
    whole = {m: deeplift.attribute(model, x, r, method=m, target="all", fuse=False)
             for m in methods}
    original = engine.PASS_BYTES
    engine.PASS_BYTES = 1  # one row per batch, one target per pass
    try:
        for m in methods:
            split = deeplift.attribute(model, x, r, method=m, target="all", fuse=False)
            torch.testing.assert_close(split, whole[m], rtol=1e-9, atol=1e-12, equal_nan=True,
                                       msg=m)  # (deconvnet of sqrt, log: NaN both ways)
    finally:
        engine.PASS_BYTES = original


def test_a_pass_releases_each_layers_values_once_its_backward_is_done(net, x):
    """A pass releases values as it goes; a pass followed by others keeps only the rule state
    they read (a second backward over the same state gives the same multipliers)."""
    model = deeplift.convert(net, x[:2])
    names = model.layer_names
    target, inp = names[-1], model.input_names[0]
    r = torch.zeros_like(x)
    kept, cached = {}, {}
    for release in (False, True):
        x_values, r_values = engine.forward_together(model, [x], [r], names)
        state = engine.PassState(model, x_values, r_values, None, None, lambda layer: "rescale",
                                 engine.RuleOptions(fuse=False))
        seeds = torch.zeros((1, *x_values[target].shape), dtype=x.dtype)
        seeds[0, :, 0] = 1
        out = engine.backward(model, state, target, seeds, [inp], release=release,
                              release_values=not release)
        again = engine.backward(model, state, target, seeds, [inp]) if not release else out
        kept[release] = (set(x_values), out[inp][0], again[inp][0])
        cached[release] = {key for key in state._cache}
    # the last pass: values and rule state go; a pass before others: the values go where the
    # later passes read only cached rule state (Rescale's factors, routing, signs), which stays
    constants = {n for n in names if state.is_constant(n)}
    assert kept[True][0] <= {target, inp} | constants
    assert kept[False][0] <= {target, inp} | constants
    assert not cached[True]
    assert {name for name, key in cached[False] if key == "rescale"} == {
        n for n in names if type(model.layers[n]).__name__ in ("ReLU", "Sigmoid", "Tanh")}
    assert torch.equal(kept[True][1], kept[False][1]) and torch.equal(kept[False][2], kept[True][1])


def test_a_forward_drops_each_value_handed_over_as_it_makes_one(net, x):
    """``forward_all(previous=...)``: before each layer runs, one value of the earlier forward
    is dropped — that layer's own, else (a value the forward drops itself) the next left — so
    no more are alive than before, and none at the end."""
    import weakref

    model = deeplift.convert(net, x[:2])
    computed = [n for n in model.layer_names if n not in model.input_names
                and not isinstance(model.layers[n], base.Constant)]
    keep = set(computed[::2]) | set(model.output_names)  # the others: dropped within the forward
    earlier = model.forward_all([x], keep=keep)
    previous = {n: v for n, v in earlier.items() if n in computed}
    alive = {n: weakref.ref(v) for n, v in previous.items()}
    del earlier
    assert 2 < len(alive) < len(computed)
    seen: list[tuple[str, set[str]]] = []
    for name in computed:
        layer = model.layers[name]

        def spy(*args, _layer=layer, _name=name):
            seen.append((_name, {n for n, ref in alive.items() if ref() is not None}))
            return type(_layer).forward(_layer, *args)
        layer.forward = spy
    try:
        values = model.forward_all([x], keep=keep, previous=previous)
    finally:
        for layer in model.layers.values():
            layer.__dict__.pop("forward", None)
    assert [n for n, _ in seen] == computed
    for k, (name, left) in enumerate(seen):
        assert name not in left and len(left) == max(0, len(alive) - k - 1), (name, left)
    assert not previous and all(ref() is None for ref in alive.values())
    out = model.output_names[0]
    assert torch.equal(values[out], model.forward_all([x])[out])


@pytest.mark.parametrize("method", ["rescale", "gradient", "integrated_gradients"])
def test_each_batch_takes_over_the_values_of_the_one_before(monkeypatch, net, x, refs, method):
    """On CPU, every batch's forward but the first gets the values of the largest layers of the
    forward before it to drop as it goes (their memory then goes to its own values); the last
    keeps none for a next one; the scores are those of one batch."""
    model = deeplift.convert(net, x[:2])
    handed, made = [], []
    forward_all = type(model).forward_all

    def spy(self, inputs, needed=None, memos=None, given=None, keep=None, dropped=None,
            previous=None):
        if memos is None:  # (shapes, a shared reference's forward, a linear stem's ends)
            return forward_all(self, inputs, needed, memos, given, keep, dropped, previous)
        handed.append(None if previous is None else set(previous))
        values = forward_all(self, inputs, needed, memos, given, keep, dropped, previous)
        assert not previous  # (all dropped by the end of the forward)
        sizes = {n: v[0].numel() for n, v in values.items() if n not in model.input_names
                 and n not in (given or {}) and not isinstance(model.layers[n], base.Constant)}
        made.append({n for n, size in sizes.items() if size == max(sizes.values())})
        assert 0 < len(made[-1]) < len(sizes)  # (some smaller: they go as the backward goes)
        return values
    monkeypatch.setattr(type(model), "forward_all", spy)
    held = []
    hand_over = engine.PairRunner._hand_over

    def recording(self, values, final):
        hand_over(self, values, final)
        held.append((final, self._previous is not None))
    monkeypatch.setattr(engine.PairRunner, "_hand_over", recording)
    kwargs = dict(method=method, target=1)
    if method == "integrated_gradients":
        kwargs["steps"] = 4
    batched = deeplift.attribute(model, x, refs, batch_size=2, **kwargs)
    assert len(handed) > 2 and handed[0] is None
    assert handed[1:] == made[:-1]
    assert held == [(False, True)] * (len(made) - 1) + [(True, False)]
    monkeypatch.undo()
    one_batch = deeplift.attribute(model, x, refs, batch_size=1000, **kwargs)
    torch.testing.assert_close(batched, one_batch, rtol=1e-12, atol=1e-14)


def test_batches_hold_whole_examples_of_several_references(monkeypatch, net, x, refs):
    """With fewer references per example than pairs per batch, a batch holds whole examples:
    every batch but the last makes values of the same shapes (as many example rows)."""
    rows = []
    forward_together = engine.forward_together

    def recording(model, xs, rs, *args, **kwargs):
        rows.append((len(xs[0]), len(rs[0])))
        return forward_together(model, xs, rs, *args, **kwargs)
    monkeypatch.setattr(engine, "forward_together", recording)
    batched = deeplift.attribute(net, x, refs, method="rescale", target=0, batch_size=8)
    assert rows == [(2, 6), (2, 6), (1, 3)]  # 5 examples, 3 references each: 6 pairs a batch
    plan = make_plan(net, x, refs, method="rescale", target=0, batch_size=8)
    assert plan.n_batches == len(rows)  # (what the command line tells of the run)
    torch.testing.assert_close(batched, deeplift.attribute(net, x, refs, method="rescale", target=0,
                                                           batch_size=15), rtol=1e-12, atol=1e-14)


def _never_lose(monkeypatch) -> list[str]:
    """Make ``values_to_lose`` say no (recording where it would have said yes)."""
    lost: list[str] = []
    values_to_lose = engine.PassState.values_to_lose

    def never(self, name):
        if values_to_lose(self, name):
            lost.append(type(self.model.layers[name]).__name__)
        return False
    monkeypatch.setattr(engine.PassState, "values_to_lose", never)
    return lost


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("method", DEEPLIFT)
@pytest.mark.parametrize("target", [0, "all"])
def test_computing_in_values_that_leave_changes_no_score(monkeypatch, net, x, method, target, fuse):
    """Where a layer's values are not read after a backward (its own, or its split's handed
    over), the rules compute in them; the scores are those of fresh tensors, and it happens."""
    if fuse:
        _compiler_or_skip()
    r = torch.zeros_like(x[:1])  # one shared reference: the pairs are the examples' own rows
    monkeypatch.setattr(engine, "PASS_BYTES", 4096)  # "all": several target passes
    in_place = deeplift.attribute(net, x, r, method=method, target=target, fuse=fuse)
    lost = _never_lose(monkeypatch)
    fresh = deeplift.attribute(net, x, r, method=method, target=target, fuse=fuse)
    torch.testing.assert_close(in_place, fresh, rtol=1e-13, atol=1e-15)
    if not fuse and method != "reveal_cancel":
        # (fused, and RevealCancel's factors op by op, are computed from the values in one loop
        # or piece by piece, not in them)
        assert lost
    if method == "reveal_cancel" and target == 0:  # a split handed over in the only pass
        assert "Conv" in lost, lost


class _ViewScored(nn.Module):
    """A convolution whose output is read through a view (the flatten) by the head and by a
    ReLU: scores asked at the view must not see the convolution's rows overwritten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6, 2)

    def forward(self, x):
        h = self.conv(x)
        return torch.relu(h).sum((1, 2)).unsqueeze(1) + self.head(h.flatten(1))


def _random_case(seed: int, depth: float):
    """A model of the random zoo, 3 inputs and references, and a layer ``depth`` of the way in
    (not an input, not a constant) to ask scores at."""
    net, shape, desc = build_model(RandomChooser(seed), seed)
    note("\n".join(desc))
    x, r = random_inputs(shape, 3, seed)
    model = deeplift.convert(net, x)
    inner = [n for n in model.layer_names if n not in model.input_names
             and not isinstance(model.layers[n], base.Constant)]
    return model, x, r, inner[int(len(inner) * depth)]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_scores_at_every_layer_are_those_of_fresh_tensors_on_random_models(seed):
    """On the random-model zoo, scores asked at an inner layer (whose values, or views of them,
    stay for the scores) and at the inputs equal those computed with nothing overwritten."""
    model, x, r, inner = _random_case(seed, 1 / 3)
    with pytest.MonkeyPatch.context() as mp:
        for method in DEEPLIFT:
            kw = dict(method=method, target="all", fuse=False, score_layer=[inner, model.input_names[0]])
            in_place = deeplift.attribute(model, x, r, **kw)
            mp.setattr(engine.PassState, "values_to_lose", lambda self, name: False)
            fresh = deeplift.attribute(model, x, r, **kw)
            mp.undo()
            for a, b in zip(in_place, fresh):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, msg=method)


def test_a_view_kept_for_the_scores_is_not_overwritten(monkeypatch):
    torch.manual_seed(0)
    net = _ViewScored().double().eval()
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    model = deeplift.convert(net, x)
    view = next(n for n in model.layer_names if type(model.layers[n]).__name__ in ("Flatten", "Reshape"))
    kw = dict(method="reveal_cancel", fuse=False, score_layer=[view, model.input_names[0]])
    r = torch.zeros_like(x[:1])
    in_place = deeplift.attribute(model, x, r, **kw)
    asked = []
    values_to_lose = engine.PassState.values_to_lose

    def spy(self, name):
        asked.append((type(self.model.layers[name]).__name__, values_to_lose(self, name)))
        return asked[-1][1]
    monkeypatch.setattr(engine.PassState, "values_to_lose", spy)
    deeplift.attribute(model, x, r, **kw)
    assert ("Conv", False) in asked and ("Conv", True) not in asked  # asked, and refused
    lost = _never_lose(monkeypatch)
    fresh = deeplift.attribute(model, x, r, **kw)
    assert "Conv" not in lost
    for a, b in zip(in_place, fresh):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("values", [
    [0.5, 1e-9, 2.0, 0.0],        # non-negative, some near 0
    [0.5, 2.0, 1e-3],             # non-negative, none near 0
    [-0.5, -1e-9, -0.0],          # non-positive, some near 0
    [-0.5, -2.0],                 # non-positive, none
    [-1.0, 1.0],                  # both signs, none near 0 (min/max alone cannot tell)
    [-1.0, 1e-9, 1.0],            # both signs, one near 0
    [float("nan"), 1e-9, 1.0],    # NaN: the |t| path
])
def test_near_zero_mask_is_that_of_the_absolute_value(values):
    from deeplift.layers.activations import _near_zero
    t = torch.tensor(values, dtype=torch.float64)
    expected = t.abs() < 1e-7
    near = _near_zero(t, 1e-7)
    if bool(expected.any()):
        assert torch.equal(near.as_mask(), expected)
    else:
        assert near is None
    assert _near_zero(t[:0], 1e-7) is None


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 70), block=st.sampled_from([4, 8, 1 << 12]), sparse=st.sampled_from([1 / 16, 1.0]),
       negated=st.booleans(), near=st.lists(st.integers(0, 69), max_size=6),
       nans=st.lists(st.integers(0, 69), max_size=3))
@example(n=16, block=4, sparse=1.0, negated=False, near=[5], nans=[6])  # a NaN and a near-zero in one block
@example(n=16, block=4, sparse=1.0, negated=True, near=[5], nans=[6])
def test_the_block_search_finds_the_elements_a_mask_finds(n, block, sparse, negated, near, nans):
    # few or many elements below the bound (above −bound for a non-positive tensor), in whole
    # blocks or the tail, NaNs (never below, but a block holding one has a NaN minimum and is
    # searched), found by a mask or by a flat index
    from deeplift.layers import activations
    t = torch.rand(n, dtype=torch.float64) + 0.5
    t[[i for i in near if i < n]] = 1e-9
    t[[i for i in nans if i < n]] = float("nan")
    if negated:
        t = -t
    expected = t > -1e-7 if negated else t < 1e-7
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(activations, "_BLOCK", block)
        patch.setattr(activations, "_SPARSE_FRACTION", sparse)
        found = activations._below(t.view(-1, 1) if n % 2 else t, 1e-7, negated=negated)
    if bool(expected.any()):
        assert torch.equal(found.as_mask().reshape(-1), expected)
    else:
        assert found is None


@pytest.mark.parametrize("negated", [False, True])
def test_a_few_near_zero_elements_are_indexed_without_a_mask(negated):
    from deeplift.layers import activations
    t = torch.rand(1000, 1000, generator=torch.Generator().manual_seed(0)) + 0.5
    t.view(-1)[[7, 300_000, 999_999]] = 0.0
    found = activations._below(-t if negated else t, 1e-7, negated=negated)
    assert found.mask is None and found.flat.tolist() == [7, 300_000, 999_999]


GRADIENT_STYLE = ["gradient", "gradient_x_input", "guided_backprop", "deconvnet", "integrated_gradients"]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_pass_keeping_only_what_its_backward_reads_gives_the_same_scores(seed):
    """The forward of a pass keeps only the values its backward's layers read
    and the splits it asks for (``Layer.pass_reads``, ``splits_read``, ``split_reads``); on the
    random-model zoo, every method scores as with every value kept, bit for bit, at the inputs
    and at an inner layer."""
    model, x, r, inner = _random_case(seed, 1 / 2)
    for method in [*GRADIENT_STYLE, *DEEPLIFT]:
        refs = None if method in GRADIENT_STYLE[:-1] else r
        for score_layer in (None, inner) if method != "integrated_gradients" else (None,):
            kw = dict(method=method, target="all", fuse=False, steps=4, score_layer=score_layer)
            lean = deeplift.attribute(model, x, refs, **kw)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(engine.PairRunner, "_values_kept", lambda self: None)
                full = deeplift.attribute(model, x, refs, **kw)
            torch.testing.assert_close(lean, full, rtol=0, atol=0, equal_nan=True, msg=method)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, 6, 3, padding=1)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = h + torch.relu(self.conv(h))
        return self.head(h.mean(-1))


def _kept_by_the_last_forward(monkeypatch, x, **kw) -> tuple[deeplift.Model, set[str]]:
    """The layers whose values the last forward of a call on ``_Residual`` returned."""
    torch.manual_seed(0)
    model = deeplift.convert(_Residual().double().eval(), x[:2])
    seen = []
    forward_all = deeplift.Model.forward_all

    def spy(self, *args, **kw):
        values = forward_all(self, *args, **kw)
        seen.append(set(values))
        return values
    monkeypatch.setattr(deeplift.Model, "forward_all", spy)
    refs = None if kw["method"] == "gradient" else torch.zeros_like(x).unsqueeze(1)
    deeplift.attribute(model, x, refs, target=0, **kw)
    return model, seen[-1]


@pytest.mark.parametrize("method, kept", [
    ("rescale", {"Input", "Conv", "ReLU", "Dense"}),      # Δy/Δx of each ReLU: its input and output
    ("reveal_cancel", {"Input", "Conv", "ReLU", "Dense"}),  # and the splits those read
    ("gradient", {"Input", "ReLU", "Dense"}),              # [y > 0] of each ReLU
])
def test_a_pass_keeps_what_its_rules_read_and_frees_the_rest(monkeypatch, x, method, kept):
    model, names = _kept_by_the_last_forward(monkeypatch, x, method=method)
    assert {type(model.layers[n]).__name__ for n in names} == kept


def test_the_node_table_keeps_every_value(monkeypatch, x):
    model, names = _kept_by_the_last_forward(monkeypatch, x, method="rescale", return_node_deltas=True)
    assert names == set(model.layer_names)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0, 1, 2, 3]), max_size=4), min_size=1, max_size=3))
def test_broadcast_shape_is_torchs(shapes):
    # the rules' plain-Python broadcast (no per-call overhead) against torch's, failures included
    try:
        expected = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        with pytest.raises(RuntimeError, match="do not broadcast"):
            base.broadcast_shape(*shapes)
    else:
        assert base.broadcast_shape(*shapes) == expected
