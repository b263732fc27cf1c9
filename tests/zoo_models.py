"""The model zoo: real architectures built with random weights, and the checks every one must pass.

Each :class:`ZooCase` builds a source model (PyTorch or Keras 3), example inputs and references.
:func:`run_case` converts it unmodified and measures what issue 9 asks of every model: the
converted forward equals the source; in float64 the contributions of ``rescale``,
``reveal_cancel`` and ``genomics_default`` sum to delta within 1e-9 (relative); ``gradient``
equals autograd on the source; and the cost of a DeepLIFT (rescale) run relative to one autograd
gradient of the source. ``tests/test_zoo.py`` asserts these; ``benchmarks/zoo_table.py`` writes
them to ``docs/zoo.md``. Models needing a zoo package (``pip install deeplift[zoo]``) name it
in ``package`` and are skipped without it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import deeplift

METHODS = ("rescale", "reveal_cancel", "genomics_default")
TOLERANCE = 1e-9


@dataclass
class Built:
    source: Any                      # nn.Module (float64, eval) or keras.Model
    inputs: tuple                    # float64 (or integer token) tensors / arrays, batch first
    references: tuple
    kind: str = "torch"              # "torch" | "keras"
    #: for integer token inputs the gradient is checked at this source submodule's output
    grad_module: Any = None
    grad_layer: str | None = None    # the converted model's layer of that output
    note: str = ""


@dataclass
class ZooCase:
    name: str
    build: Callable[[], Built]
    package: str | None = None       # the import a model needs beyond the core (None: none)
    fast: bool = False               # runs in the default suite
    #: why the model does not pass yet (the slow test expects it to fail, strictly: a fix shows)
    known_failure: str | None = None

    def available(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None


@dataclass
class ZooResult:
    name: str
    converts: bool = False
    error: str = ""
    forward_error: float = float("nan")
    delta_error: dict = field(default_factory=dict)     # method -> max relative error
    gradient_error: float = float("nan")
    cost_ratio: float = float("nan")                    # rescale time / autograd gradient time
    note: str = ""

    #: autograd of a float32 source (Keras) is exact to float32 rounding only
    gradient_tolerance: float = 1e-8

    @property
    def passes(self) -> bool:
        return (self.converts and not self.error and self.forward_error <= 1e-8
                and all(v <= TOLERANCE for v in self.delta_error.values())
                and len(self.delta_error) == len(METHODS)
                and self.gradient_error <= self.gradient_tolerance)


def _rand(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def one_hot_dna(n: int, length: int, seed: int) -> torch.Tensor:
    idx = torch.randint(0, 4, (n, length), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(idx, 4).transpose(1, 2).double()


def _eval64(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return module.double().eval()


# ---------------------------------------------------------------------------------------------
# small hand-written models (no zoo package)


class BiLSTMOverDNA(nn.Module):
    """A 2-layer bidirectional LSTM over one-hot DNA (N, 4, L), mean over time, two tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 5, padding=2)
        self.rnn = nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(12, 2)

    def forward(self, x):
        seq, _ = self.rnn(torch.relu(self.conv(x)).transpose(1, 2))
        return self.out(seq.mean(1))


class UNet1d(nn.Module):
    """Encoder-decoder over a track: strided convs, ConvTranspose and interpolation, skips."""

    def __init__(self) -> None:
        super().__init__()
        self.down1, self.down2 = nn.Conv1d(4, 8, 4, stride=2, padding=1), nn.Conv1d(8, 8, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1)
        self.mix = nn.Conv1d(16, 4, 3, padding=1)
        self.head = nn.Conv1d(4, 1, 1)

    def forward(self, x):
        d1 = F.gelu(self.down1(x))
        d2 = F.gelu(self.down2(d1))
        u1 = torch.relu(self.up1(d2))
        u = F.interpolate(torch.cat([u1, d1], 1), scale_factor=2, mode="linear")
        return self.head(torch.tanh(self.mix(u))).flatten(1)[:, ::8]


class TokenCNNGRU(nn.Module):
    """Integer tokens -> embedding -> conv -> GRU -> logits (scores per token)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.rnn = nn.GRU(8, 5, batch_first=True)
        self.out = nn.Linear(5, 3)

    def forward(self, ids):
        h = torch.relu(self.conv(self.emb(ids).transpose(1, 2))).transpose(1, 2)
        return self.out(self.rnn(h)[1][-1])


def _bilstm() -> Built:
    return Built(_eval64(BiLSTMOverDNA()), (one_hot_dna(2, 10, 1),), (one_hot_dna(2, 10, 2),))


def _unet() -> Built:
    return Built(_eval64(UNet1d()), (_rand(3, 4, 32, seed=1),), (_rand(3, 4, 32, seed=2),))


def _token_gru() -> Built:
    net = _eval64(TokenCNNGRU())
    g = torch.Generator().manual_seed(3)
    ids, ref = torch.randint(0, 20, (3, 12), generator=g), torch.randint(0, 20, (3, 12), generator=g)
    return Built(net, (ids,), (ref,), grad_module=net.emb, grad_layer="emb")


# ---------------------------------------------------------------------------------------------
# zoo packages


def _bpnet() -> Built:
    from bpnetlite import BPNet
    net = _eval64(BPNet(n_filters=16, n_layers=3, n_outputs=2, n_control_tracks=2, trimming=None))
    length = 200
    x, r = one_hot_dna(2, length, 1), one_hot_dna(2, length, 2)
    ctl = _rand(2, 2, length, seed=3).abs()
    return Built(net, (x, ctl), (r, ctl.clone()), note="control tracks: references equal the inputs")


def _chrombpnet() -> Built:
    from bpnetlite import BPNet
    from bpnetlite.chrombpnet import ChromBPNet
    bias = BPNet(n_filters=8, n_layers=2, n_outputs=1, n_control_tracks=0, trimming=None)
    acc = BPNet(n_filters=16, n_layers=3, n_outputs=1, n_control_tracks=0, trimming=None)
    net = _eval64(ChromBPNet(bias, acc))
    return Built(net, (one_hot_dna(2, 200, 1),), (one_hot_dna(2, 200, 2),))


class _MissingMeta(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _MissingMeta(name, (_Missing,), {})


class _Missing(nn.Module, metaclass=_MissingMeta):
    """A torchvision name timm imports but our models never use (data transforms, frozen BN)."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("torchvision is not importable in this environment")


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """timm imports torchvision at import time, but the torchvision wheel that pairs with CPU torch
    2.13 is a CUDA build that fails to import ("operator torchvision::nms does not exist"). When
    torchvision cannot be imported, the zoo lets ``import torchvision.*`` yield modules of inert
    placeholder names, so timm's model code (which needs none of them) can be built."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: (_ for _ in ()).throw(AttributeError(name)) if name.startswith("__") \
            else _MissingMeta(name, (_Missing,), {})
        return module

    def exec_module(self, module) -> None:
        pass


def _import_timm():
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken: the stand-in (test process only)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if not any(isinstance(f, _TorchvisionStandIn) for f in sys.meta_path):
            sys.meta_path.insert(0, _TorchvisionStandIn())
    import timm
    return timm


def _timm(name: str, **kwargs) -> Callable[[], Built]:
    def build() -> Built:
        timm = _import_timm()
        net = _eval64(timm.create_model(name, pretrained=False, num_classes=4, **kwargs))
        size = kwargs.get("img_size", 32)
        return Built(net, (_rand(2, 3, size, size, seed=1),), (_rand(2, 3, size, size, seed=2),))
    return build


def _enformer() -> Built:
    from enformer_pytorch import Enformer
    net = Enformer.from_hparams(dim=48, depth=1, heads=2, output_heads=dict(human=3),
                                target_length=4, num_downsamples=5, dim_divisible_by=8)

    class Track(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):  # one-hot (N, L, 4) -> the human head
            return self.inner(x, head="human").flatten(1)

    net = _eval64(Track(net))
    x, r = one_hot_dna(2, 256, 1).transpose(1, 2), one_hot_dna(2, 256, 2).transpose(1, 2)
    return Built(net, (x.contiguous(),), (r.contiguous(),), note="wrapped to pick the human head")


def _bert() -> Built:
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2,
                        attn_implementation="sdpa")

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(input_ids=ids).logits

    net = _eval64(Logits(BertForSequenceClassification(config)))
    g = torch.Generator().manual_seed(1)
    ids, ref = torch.randint(1, 50, (2, 10), generator=g), torch.zeros(2, 10, dtype=torch.long)
    return Built(net, (ids,), (ref,), grad_module=net.inner.bert.embeddings.word_embeddings,
                 grad_layer="inner.bert.embeddings.word_embeddings",
                 note="wrapped to return .logits; reference: [PAD] tokens")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    keras.utils.set_random_seed(0)
    return keras


def _keras_mobilenet() -> Built:
    keras = _keras()
    km = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), alpha=0.25, classes=3)
    rng = np.random.default_rng(0)
    return Built(km, (rng.random((2, 32, 32, 3)),), (rng.random((2, 32, 32, 3)),), kind="keras")


def _keras_transformer() -> Built:
    keras = _keras()
    inp = keras.Input((8, 16))
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([inp, att]))
    ff = keras.layers.Dense(16)(keras.layers.Dense(32, activation="relu")(h))
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, ff]))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    rng = np.random.default_rng(0)
    return Built(keras.Model(inp, out), (rng.normal(size=(2, 8, 16)),), (rng.normal(size=(2, 8, 16)),),
                 kind="keras", note="residuals as keras.layers.Add (a functional `+` is a keras.ops node)")


def _keras_lstm() -> Built:
    keras = _keras()
    inp = keras.Input((20, 4))
    h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(inp)
    h = keras.layers.LSTM(6)(h)
    out = keras.layers.Dense(2)(h)
    x, r = one_hot_dna(2, 20, 1).transpose(1, 2).numpy(), one_hot_dna(2, 20, 2).transpose(1, 2).numpy()
    return Built(keras.Model(inp, out), (x,), (r,), kind="keras")


CASES = [
    ZooCase("2-layer bidirectional LSTM over one-hot DNA", _bilstm, fast=True),
    ZooCase("1-D U-Net (ConvTranspose, interpolate, skips)", _unet, fast=True),
    ZooCase("tokens -> embedding -> conv -> GRU", _token_gru, fast=True),
    ZooCase("bpnet-lite BPNet with 2 control tracks", _bpnet, "bpnetlite"),
    ZooCase("bpnet-lite ChromBPNet", _chrombpnet, "bpnetlite"),
    ZooCase("timm convnext_atto", _timm("convnext_atto"), "timm"),
    ZooCase("timm vit_tiny_patch16 (32x32, patch 8)", _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), "timm"),
    ZooCase("timm swin_tiny (32x32, window 2, shifted windows)", _timm("swin_tiny_patch4_window7_224", img_size=32, window_size=2, depths=(2, 2), num_heads=(1, 2), embed_dim=16), "timm"),
    ZooCase("timm efficientnet_b0", _timm("efficientnet_b0"), "timm"),
    ZooCase("timm mobilenetv3_small_050", _timm("mobilenetv3_small_050"), "timm"),
    ZooCase("enformer-pytorch Enformer (small config)", _enformer, "enformer_pytorch"),
    ZooCase("Hugging Face BERT (small config, token ids)", _bert, "transformers"),
    ZooCase("Keras 3 MobileNet (alpha 0.25)", _keras_mobilenet, "keras"),
    ZooCase("Keras transformer block (MultiHeadAttention, LayerNormalization)", _keras_transformer, "keras"),
    ZooCase("Keras bidirectional LSTM", _keras_lstm, "keras"),
]


# ---------------------------------------------------------------------------------------------
# the checks


def _targets(n_features: int) -> list[int]:
    return sorted({0, n_features // 2, n_features - 1})


def _first_line(exc: BaseException) -> str:
    rows = getattr(exc, "ops", None)
    if rows and len(rows) > 1:  # the table of every op without a rule: its first row's reason
        text = f"{type(exc).__name__}: {len(rows)} kinds of op without a rule; first: {rows[0]['reason']}"
    else:
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:300]


def run_case(case: ZooCase) -> ZooResult:
    """Every check of the zoo on one model; a failure is recorded as the first error, not raised."""
    result = ZooResult(case.name)
    try:
        built = case.build()
        result.note = built.note
    except Exception as exc:  # noqa: BLE001 - the table reports it
        result.error = "build: " + _first_line(exc)
        return result
    try:
        model = (deeplift.convert(built.source, built.inputs if len(built.inputs) > 1 else built.inputs[0])
                 if built.kind == "torch" else deeplift.load(built.source))
        result.converts = True
    except Exception as exc:  # noqa: BLE001
        result.error = _first_line(exc)
        return result
    try:
        _check(model, built, result)
    except Exception as exc:  # noqa: BLE001
        result.error = _first_line(exc)
        if os.environ.get("DEEPLIFT_ZOO_TRACE"):
            traceback.print_exc()
    return result


def _source_forward(built: Built, inputs: tuple) -> list[torch.Tensor]:
    if built.kind == "torch":
        with torch.no_grad():
            out = built.source(*inputs)
    else:
        out = built.source(*[torch.as_tensor(np.asarray(i)) for i in inputs])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [torch.as_tensor(np.asarray(o.detach().cpu()) if isinstance(o, torch.Tensor) else np.asarray(o)).double()
            for o in out]


def _check(model: deeplift.Model, built: Built, result: ZooResult) -> None:
    inputs, refs = built.inputs, built.references
    as_arg = (lambda t: t if len(t) > 1 else t[0])
    # forward (in the source's own precision: Keras models are float32)
    want = _source_forward(built, inputs)
    got = model(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    result.forward_error = max(float((torch.as_tensor(np.asarray(g)).double() - w).abs().max()
                                     / (1 + w.abs().max())) for g, w in zip(got, want))
    if built.kind == "keras":  # float32 source: compare at float32 rounding, then check in float64
        result.gradient_tolerance = 1e-5
        result.forward_error = result.forward_error if result.forward_error > 1e-5 else 0.0
        model.to(torch.float64)
        inputs = tuple(np.asarray(i, dtype=np.float64) if np.asarray(i).dtype.kind == "f" else i for i in inputs)
        refs = tuple(np.asarray(i, dtype=np.float64) if np.asarray(i).dtype.kind == "f" else i for i in refs)
        want_x = [torch.as_tensor(np.asarray(o)) for o in _as_tuple(model(*inputs))]
        want_r = [torch.as_tensor(np.asarray(o)) for o in _as_tuple(model(*refs))]
    else:
        want_x, want_r = want, _source_forward(built, refs)
    # summation to delta for each output, a few targets each
    for method in METHODS:
        worst = 0.0
        for k, name in enumerate(model.output_names):
            wx, wr = want_x[k].reshape(want_x[k].shape[0], -1), want_r[k].reshape(want_r[k].shape[0], -1)
            targets = _targets(wx.shape[1])
            scores = deeplift.attribute(model, as_arg(inputs), as_arg(refs), method=method,
                                        target=deeplift.SeveralTargets(targets), target_layer=name,
                                        softmax_centering=False)
            scores = _as_tuple(scores)
            total = sum(torch.as_tensor(np.asarray(s)).reshape(s.shape[0], s.shape[1], -1).sum(-1) for s in scores)
            delta = (wx - wr)[:, targets]
            worst = max(worst, float((total - delta).abs().max() / (1 + delta.abs().max())))
        result.delta_error[method] = worst
    # gradient against autograd of the source (first output, first target)
    result.gradient_error, ratio = _gradient_check(model, built, inputs)
    result.cost_ratio = ratio


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _gradient_check(model: deeplift.Model, built: Built, inputs: tuple) -> tuple[float, float]:
    name = model.output_names[0]
    if built.grad_module is not None:  # token ids: the gradient at the embedding output
        captured = {}

        def hook(module, args, out):
            out = out.detach().requires_grad_(True)
            captured["e"] = out
            return out
        handle = built.grad_module.register_forward_hook(hook)
        try:
            start = time.perf_counter()
            with torch.enable_grad():
                out = _as_tuple(built.source(*inputs))[0]
                (want,) = torch.autograd.grad(out.reshape(out.shape[0], -1)[:, 0].sum(), captured["e"])
            t_grad = time.perf_counter() - start
        finally:
            handle.remove()
        layer = next(n for n in model.layer_names if n == built.grad_layer or n.startswith(built.grad_layer + "."))
        got = deeplift.attribute(model, inputs[0], method="gradient", target=0, target_layer=name,
                                 score_layer=layer)
        err = float((got - want).abs().max() / (1 + want.abs().max()))
    else:
        xs = [torch.as_tensor(np.asarray(i)).double().requires_grad_(True) for i in inputs]
        source = built.source
        start = time.perf_counter()
        with torch.enable_grad():
            out = _as_tuple(source(*xs))[0]
            wants = torch.autograd.grad(out.reshape(out.shape[0], -1)[:, 0].sum(), xs, allow_unused=True)
        t_grad = time.perf_counter() - start
        got = _as_tuple(deeplift.attribute(model, tuple(xs) if len(xs) > 1 else xs[0].detach(),
                                           method="gradient", target=0, target_layer=name))
        err = 0.0
        for g, w in zip(got, wants):
            w = torch.zeros_like(xs[0]) if w is None else w
            g = torch.as_tensor(np.asarray(g.detach() if isinstance(g, torch.Tensor) else g))
            err = max(err, float((g - w).abs().max() / (1 + w.abs().max())))
    start = time.perf_counter()
    deeplift.attribute(model, inputs if len(inputs) > 1 else inputs[0], method="rescale", target=0,
                       target_layer=name)
    t_dl = time.perf_counter() - start
    return err, t_dl / max(t_grad, 1e-9)
