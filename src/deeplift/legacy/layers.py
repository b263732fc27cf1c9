"""The original DeepLIFT's (v0.6.13) layer constructors, enums and errors.

The original built models by hand in TensorFlow layout (channels last; Dense kernel ``(in, out)``,
Conv1D kernel ``(k, C_in, C_out)``, Conv2D kernel ``(kh, kw, C_in, C_out)``, padding
``'SAME'``/``'VALID'`` with TensorFlow's uneven SAME padding) and gave every activation layer its
``nonlinear_mxts_mode``. The classes here take exactly those arguments and are thin subclasses of
our layers, so a graph built from them runs on our engine; spatial layers keep the original's
channels-last tensors by moving the channel axis around our channels-first ops inside the layer
(no extra nodes). They are what ``deeplift.layers.core``, ``.convolutional``, ``.normalization``
export::

    from deeplift.layers import core, convolutional, NonlinearMxtsMode
    from deeplift.legacy.layers import ReLU
    inp = core.Input(batch_shape=(None, 10, 4))
    conv = convolutional.Conv1D(kernel=K, bias=b, stride=1, padding="VALID").set_inputs(inp)
    relu = ReLU(nonlinear_mxts_mode=NonlinearMxtsMode.Rescale).set_inputs(conv)

Which nonlinearity rule a layer uses is still decided in one place (the model wrappers of
:mod:`deeplift.models` map ``nonlinear_mxts_mode`` to our rule names); these classes only carry
the attribute.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from torch import Tensor

from ..errors import DeepLiftError, InputError
from .batching import enum
from .blob_api import BlobMethods
from ..layers import activations as _act
from ..layers.base import Input as _Input
from ..layers.base import Layer as _Layer
from ..layers.linear import AvgPool as _AvgPool
from ..layers.linear import BatchNorm as _BatchNorm
from ..layers.linear import Conv as _Conv
from ..layers.linear import Dense as _Dense
from ..layers.linear import Reduce as _Reduce
from ..layers.linear import torch_pad_arg
from ..layers.merge import Concat as _Concat
from ..layers.pooling import MaxPool as _MaxPool
from ..layers.pooling import MaxReduce as _MaxReduce
from ..layers.shape import Flatten as _Flatten
from ..layers.shape import Identity as _Identity

# ---------------------------------------------------------------------------------------------
# enums (plain strings, as in the original)

NonlinearMxtsMode = enum(
    Gradient="Gradient", Rescale="Rescale", DeconvNet="DeconvNet", GuidedBackprop="GuidedBackprop",
    GuidedBackpropRescale="GuidedBackpropRescale", RevealCancel="RevealCancel",
    PassThrough="PassThrough", DeepLIFT_GenomicsDefault="DeepLIFT_GenomicsDefault")
DenseMxtsMode = enum(Linear="Linear")
ConvMxtsMode = enum(Linear="Linear")
MaxPoolDeepLiftMode = enum(gradient="gradient")
ScoringMode = enum(OneAndZeros="OneAndZeros", SoftmaxPreActivation="SoftmaxPreActivation")
ActivationNames = enum(sigmoid="sigmoid", hard_sigmoid="hard_sigmoid", tanh="tanh", relu="relu",
                       linear="linear")
PoolMode = enum(max="max", avg="avg")
PaddingMode = enum(same="SAME", valid="VALID")
DataFormat = enum(channels_first="channels_first", channels_last="channels_last")

#: NonlinearMxtsMode -> our rule name (``DeepLIFT_GenomicsDefault`` is resolved per layer)
MODE_TO_RULE = {
    "Rescale": "rescale",
    "RevealCancel": "reveal_cancel",
    "Gradient": "gradient",
    "GuidedBackprop": "guided_backprop",
    "GuidedBackpropRescale": "guided_backprop_rescale",
    "DeconvNet": "deconvnet",
    "PassThrough": "pass_through",
}


# ---------------------------------------------------------------------------------------------
# errors (each also subclasses the builtin exception the original raised)


class UnsupportedModeError(DeepLiftError, RuntimeError):
    """An unknown ``nonlinear_mxts_mode``/``dense_mxts_mode``/``conv_mxts_mode``/maxpool mode, or a
    ``DeepLIFT_GenomicsDefault`` layer that follows neither a dense nor a convolution layer."""


class TargetLayerError(DeepLiftError, RuntimeError):
    """The target layer of a scoring function is an activation layer."""


class MultipliersNotAvailableError(DeepLiftError, AttributeError):
    """Multipliers were asked for a layer that is not an Input layer."""


class OriginalInputError(InputError, AssertionError):
    """Malformed arguments to an original-API function (the original asserted)."""


def check_mode(value: str, allowed, what: str) -> str:
    if value not in allowed.vals:
        raise UnsupportedModeError(f"Unsupported {what} {value!r}; expected one of {allowed.vals}")
    return value


# ---------------------------------------------------------------------------------------------
# shared behaviour

_names = itertools.count()

#: the seed's name of the base class of every layer (``deeplift.blobs.core.Blob``)
Blob = _Layer


class OriginalLayer(BlobMethods):
    """Mixin: automatic names (layers can be wired before a model names them), the original's
    small accessors and the seed's blob methods (:mod:`deeplift.legacy.blob_api`)."""

    def _auto_name(self, name: str | None) -> str:
        return name if name is not None else f"{type(self).__name__.lower()}_{next(_names)}"

    def get_inputs(self):
        ins = getattr(self, "_input_layers", [])
        return ins[0] if len(ins) == 1 else ins

    def build_fwd_pass_vars(self) -> None:
        """No-op: our graphs need no symbolic build step (kept for old code)."""


def _to_first(t: Tensor) -> Tensor:
    """(N, *spatial, C) -> (N, C, *spatial)."""
    return t.movedim(-1, 1)


def _to_last(t: Tensor) -> Tensor:
    """(N, C, *spatial) -> (N, *spatial, C)."""
    return t.movedim(1, -1)


def _first_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    return (shape[0], shape[-1], *shape[1:-1])


def tf_padding_pairs(mode: str, spatial: Sequence[int], kernel: Sequence[int],
                     stride: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """TensorFlow's padding as (before, after) per spatial dim: SAME gives ``ceil(L/s)`` outputs
    with the odd pad at the end; VALID pads nothing."""
    if mode == "VALID":
        return tuple((0, 0) for _ in spatial)
    pairs = []
    for size, k, s in zip(spatial, kernel, stride):
        out = -(-int(size) // s)
        total = max((out - 1) * s + k - int(size), 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _padding_mode(padding: str) -> str:
    mode = str(padding).upper()
    if mode not in PaddingMode.vals:
        raise InputError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return mode


def _ints(v, n: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(i) for i in v)
    return v * n if len(v) == 1 else v


def _data_format(data_format: str) -> bool:
    """True for channels last."""
    if data_format not in DataFormat.vals:
        raise NotImplementedError(f"data_format {data_format!r} is not supported; expected "
                                  f"{DataFormat.vals}")
    return data_format == DataFormat.channels_last


# ---------------------------------------------------------------------------------------------
# core


class Input(OriginalLayer, _Input):
    """``Input(batch_shape=(None, ...))``; the reference is given to the scoring function.
    The seed's ``Input(num_dims=2, shape=(None, 10))`` (``shape`` with the batch axis) works too."""

    def __init__(self, batch_shape=None, name: str | None = None, *, num_dims: int | None = None,
                 shape=None, **kwargs) -> None:
        if batch_shape is None:
            if shape is None:
                raise InputError("Input needs batch_shape=(None, ...) (or the seed's shape=)")
            batch_shape = tuple(shape)
            if num_dims is not None and len(batch_shape) != num_dims:
                raise InputError(f"Input: num_dims={num_dims} but shape {batch_shape} has "
                                 f"{len(batch_shape)} axes (the batch axis included)")
        elif shape is not None:
            raise InputError("Input: give batch_shape or the seed's shape, not both")
        super().__init__(batch_shape=batch_shape, name=self._auto_name(name), **kwargs)


class Dense(OriginalLayer, _Dense):
    """``y = x @ kernel + bias`` with ``kernel`` of shape (in, out); the seed's ``W=``/``b=``
    keywords (the same layout) work too."""

    def __init__(self, kernel=None, bias=None, dense_mxts_mode: str = DenseMxtsMode.Linear,
                 name: str | None = None, *, W=None, b=None) -> None:
        if (kernel is None) == (W is None) or (bias is None) == (b is None):
            raise InputError("Dense needs kernel= and bias= (or the seed's W= and b=), once each")
        kernel = kernel if W is None else W
        bias = bias if b is None else b
        self.dense_mxts_mode = check_mode(dense_mxts_mode, DenseMxtsMode, "dense_mxts_mode")
        kernel = np.asarray(kernel, dtype=np.float32)
        super().__init__(kernel.T, np.asarray(bias, dtype=np.float32), name=self._auto_name(name))


class Flatten(OriginalLayer, _Flatten):
    """Flatten in the tensor's (channels-last) memory order, as the original."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=self._auto_name(name))


class NoOp(OriginalLayer, _Identity):
    """Identity (what Keras' Dropout converts to)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=self._auto_name(name))


class Concat(OriginalLayer, _Concat):
    """Concatenation of a list of inputs along ``axis`` (counted with the batch axis)."""

    def __init__(self, axis: int, name: str | None = None) -> None:
        super().__init__(dim=axis, name=self._auto_name(name))
        self.axis = axis


class BatchNormalization(OriginalLayer, _BatchNorm):
    """Inference batch norm along ``axis`` of the channels-last tensor (negative allowed)."""

    def __init__(self, gamma, beta, axis: int, mean, var, epsilon: float = 1e-3,
                 name: str | None = None) -> None:
        mean, var = np.asarray(mean, dtype=np.float32), np.asarray(var, dtype=np.float32)
        if mean.ndim != 1 or var.ndim != 1:
            raise InputError("BatchNormalization mean and var must be 1-D")
        super().__init__(mean, var, weight=np.asarray(gamma, dtype=np.float32),
                         bias=np.asarray(beta, dtype=np.float32), eps=epsilon, axis=axis,
                         name=self._auto_name(name))


# ---------------------------------------------------------------------------------------------
# activations


class _ModeMixin(OriginalLayer):
    def _init_mode(self, nonlinear_mxts_mode: str | None) -> None:
        if nonlinear_mxts_mode is not None:
            check_mode(nonlinear_mxts_mode, NonlinearMxtsMode, "nonlinear_mxts_mode")
        #: None = the mode of the model wrapper (DeepLIFT_GenomicsDefault unless told otherwise);
        #: after the wrapper resolves the genomics default this holds Rescale or RevealCancel
        self.nonlinear_mxts_mode = nonlinear_mxts_mode


class ReLU(_ModeMixin, _act.ReLU):
    def __init__(self, nonlinear_mxts_mode: str | None = None, name: str | None = None,
                 **kwargs) -> None:
        super().__init__(name=self._auto_name(name))
        self._init_mode(nonlinear_mxts_mode)


class PReLU(_ModeMixin, _act.PReLU):
    """``alpha`` is a scalar or an array broadcast against the (channels-last) example shape, as
    Keras stores it (e.g. ``(L, C)`` or ``(1, C)``)."""

    def __init__(self, alpha, nonlinear_mxts_mode: str | None = None, name: str | None = None,
                 **kwargs) -> None:
        super().__init__(np.asarray(alpha, dtype=np.float32), axis=None, name=self._auto_name(name))
        self._init_mode(nonlinear_mxts_mode)


class Sigmoid(_ModeMixin, _act.Sigmoid):
    def __init__(self, nonlinear_mxts_mode: str | None = None, name: str | None = None,
                 **kwargs) -> None:
        super().__init__(name=self._auto_name(name))
        self._init_mode(nonlinear_mxts_mode)


class Tanh(_ModeMixin, _act.Tanh):
    def __init__(self, nonlinear_mxts_mode: str | None = None, name: str | None = None,
                 **kwargs) -> None:
        super().__init__(name=self._auto_name(name))
        self._init_mode(nonlinear_mxts_mode)


class Softmax(_ModeMixin, _act.Softmax):
    """Softmax over the last axis (meant as the final layer, beyond the target)."""

    def __init__(self, nonlinear_mxts_mode: str | None = None, name: str | None = None,
                 **kwargs) -> None:
        super().__init__(dim=-1, name=self._auto_name(name))
        self._init_mode(nonlinear_mxts_mode)


# ---------------------------------------------------------------------------------------------
# convolutions


class _TFConv(OriginalLayer, _Conv):
    """Our convolution with TF kernels, TF padding and (unless channels first) channels-last
    tensors; the padding is worked out from the input size when the layer runs."""

    def _setup(self, kernel, bias, stride, padding: str, channels_last: bool,
               conv_mxts_mode: str, name: str | None) -> None:
        self.conv_mxts_mode = check_mode(conv_mxts_mode, ConvMxtsMode, "conv_mxts_mode")
        kernel = np.asarray(kernel, dtype=np.float32)
        nd = kernel.ndim - 2
        weight = kernel.transpose(nd + 1, nd, *range(nd))  # (*k, C_in, C_out) -> (C_out, C_in, *k)
        if bias is None:
            bias = np.zeros(kernel.shape[-1], dtype=np.float32)
        _Conv.__init__(self, weight, np.asarray(bias, dtype=np.float32), stride=_ints(stride, nd),
                       padding=0, name=self._auto_name(name))
        self.tf_padding = _padding_mode(padding)
        self.channels_last = channels_last

    def _configure(self, spatial: Sequence[int]) -> None:
        pairs = tf_padding_pairs(self.tf_padding, spatial, self.weight.shape[2:], self.stride)
        self.symmetric = all(a == b for a, b in pairs)
        self.padding = tuple(a for a, _ in pairs) if self.symmetric else (0,) * self.nd
        self.pre_pad = None if self.symmetric else torch_pad_arg(pairs)

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if self.channels_last:
            x = _to_first(x)
        self._configure(x.shape[2:])
        out = super().apply(x, weight, bias)
        return _to_last(out) if self.channels_last else out

    def apply_transpose(self, m: Tensor, weight: Tensor, input_shape) -> Tensor:
        shape = _first_shape(input_shape) if self.channels_last else tuple(input_shape)
        self._configure(shape[2:])
        g = super().apply_transpose(_to_first(m) if self.channels_last else m, weight, shape)
        return _to_last(g) if self.channels_last else g


class Conv1D(_TFConv):
    """``Conv1D(kernel (k, C_in, C_out), bias, stride, padding='SAME'|'VALID')`` on (N, L, C)."""

    def __init__(self, kernel, bias, stride=1, padding: str = PaddingMode.valid,
                 conv_mxts_mode: str = ConvMxtsMode.Linear, name: str | None = None) -> None:
        self._setup(kernel, bias, stride, padding, True, conv_mxts_mode, name)


class Conv2D(_TFConv):
    """``Conv2D(kernel (kh, kw, C_in, C_out), bias, strides, padding, data_format)``."""

    def __init__(self, kernel, bias, strides=(1, 1), padding: str = PaddingMode.valid,
                 data_format: str = DataFormat.channels_last,
                 conv_mxts_mode: str = ConvMxtsMode.Linear, name: str | None = None) -> None:
        self._setup(kernel, bias, strides, padding, _data_format(data_format), conv_mxts_mode, name)
        self.data_format = data_format


# ---------------------------------------------------------------------------------------------
# pooling


class _TFAvgPool(OriginalLayer, _AvgPool):
    def _setup(self, nd: int, pool, stride, padding: str, channels_last: bool,
               name: str | None) -> None:
        pool = _ints(pool, nd)
        _AvgPool.__init__(self, nd, pool, _ints(stride if stride is not None else pool, nd),
                          count_include_pad=False, name=self._auto_name(name))
        self.tf_padding = _padding_mode(padding)
        self.channels_last = channels_last

    def linear(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = _to_first(x)
        self.pairs = tf_padding_pairs(self.tf_padding, x.shape[2:], self.kernel_size, self.stride)
        self.native = all(a == b and a <= k // 2 for (a, b), k in zip(self.pairs, self.kernel_size))
        out = super().linear(x)
        return _to_last(out) if self.channels_last else out


class AvgPool1D(_TFAvgPool):
    """TF average pooling on (N, L, C); SAME averages over the real (unpadded) elements only."""

    def __init__(self, pool_length, stride=None, padding: str = PaddingMode.valid,
                 name: str | None = None) -> None:
        self._setup(1, pool_length, stride, padding, True, name)


class AvgPool2D(_TFAvgPool):
    def __init__(self, pool_size, strides=None, padding: str = PaddingMode.valid,
                 data_format: str = DataFormat.channels_last, name: str | None = None) -> None:
        self._setup(2, pool_size, strides, padding, _data_format(data_format), name)
        self.data_format = data_format


class _TFMaxPool(OriginalLayer, _MaxPool):
    """Max pooling whose multipliers go to the input's argmax (``MaxPoolDeepLiftMode.gradient``,
    when the wrapper runs with ``max_routing="gradient"``, its default)."""

    def _setup(self, nd: int, pool, stride, padding: str, channels_last: bool,
               maxpool_deeplift_mode: str, name: str | None) -> None:
        self.maxpool_deeplift_mode = check_mode(maxpool_deeplift_mode, MaxPoolDeepLiftMode,
                                                "maxpool_deeplift_mode")
        pool = _ints(pool, nd)
        _MaxPool.__init__(self, nd, pool, _ints(stride if stride is not None else pool, nd),
                          name=self._auto_name(name))
        self.tf_padding = _padding_mode(padding)
        self.channels_last = channels_last

    # every hook below sees channels-last tensors/shapes (when channels_last) and hands the base
    # class channels-first ones; the padding is configured from the input's spatial size
    def _configure(self, spatial: Sequence[int]) -> None:
        pairs = tf_padding_pairs(self.tf_padding, spatial, self.kernel_size, self.stride)
        self.pad = torch_pad_arg(pairs) if any(a or b for a, b in pairs) else None

    def _first(self, t: Tensor) -> Tensor:
        t = _to_first(t) if self.channels_last else t
        self._configure(t.shape[2:])
        return t

    def _first_shape(self, shape) -> tuple[int, ...]:
        shape = _first_shape(shape) if self.channels_last else tuple(shape)
        self._configure(shape[2:])
        return shape

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(self._first(x))
        return _to_last(out) if self.channels_last else out

    def flat_view(self, t: Tensor) -> Tensor:
        return super().flat_view(self._first(t))

    def flat_shape(self, input_shape):
        return super().flat_shape(self._first_shape(input_shape))

    def max_with_indices(self, flat: Tensor, t: Tensor):
        return super().max_with_indices(flat, self._first(t))

    def unflat_grad(self, g: Tensor, input_shape):
        g = super().unflat_grad(g, self._first_shape(input_shape))
        return _to_last(g) if self.channels_last else g

    def output_shape_of(self, out_flat: Tensor, state) -> Tensor:
        shape, _, _ = state.pair_shape(self.name, out_flat.shape[0])
        if not self.channels_last:
            return out_flat.reshape(shape)
        return _to_last(out_flat.reshape(_first_shape(shape)))

    def _route_backward(self, state, m: Tensor) -> Tensor:
        # m is (T, P, *out); the base reshapes it as (T, P, C, -1)
        return super()._route_backward(state, m.movedim(-1, 2) if self.channels_last else m)


class MaxPool1D(_TFMaxPool):
    def __init__(self, pool_length, stride=None, padding: str = PaddingMode.valid,
                 maxpool_deeplift_mode: str = MaxPoolDeepLiftMode.gradient,
                 name: str | None = None) -> None:
        self._setup(1, pool_length, stride, padding, True, maxpool_deeplift_mode, name)


class MaxPool2D(_TFMaxPool):
    def __init__(self, pool_size, strides=None, padding: str = PaddingMode.valid,
                 data_format: str = DataFormat.channels_last,
                 maxpool_deeplift_mode: str = MaxPoolDeepLiftMode.gradient,
                 name: str | None = None) -> None:
        self._setup(2, pool_size, strides, padding, _data_format(data_format),
                    maxpool_deeplift_mode, name)
        self.data_format = data_format


class GlobalMaxPool1D(OriginalLayer, _MaxReduce):
    """Max over the length axis of (N, L, C) -> (N, C)."""

    def __init__(self, maxpool_deeplift_mode: str = MaxPoolDeepLiftMode.gradient,
                 name: str | None = None) -> None:
        self.maxpool_deeplift_mode = check_mode(maxpool_deeplift_mode, MaxPoolDeepLiftMode,
                                                "maxpool_deeplift_mode")
        super().__init__((1,), name=self._auto_name(name))


class GlobalAvgPool1D(OriginalLayer, _Reduce):
    """Mean over the length axis of (N, L, C) -> (N, C)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__((1,), mean=True, name=self._auto_name(name))


__all__ = [
    "NonlinearMxtsMode", "DenseMxtsMode", "ConvMxtsMode", "MaxPoolDeepLiftMode", "ScoringMode",
    "ActivationNames", "PoolMode", "PaddingMode", "DataFormat", "MODE_TO_RULE",
    "UnsupportedModeError", "TargetLayerError", "MultipliersNotAvailableError",
    "OriginalInputError", "OriginalLayer", "Blob", "tf_padding_pairs",
    "Input", "Dense", "Flatten", "NoOp", "Concat", "BatchNormalization",
    "ReLU", "PReLU", "Sigmoid", "Tanh", "Softmax",
    "Conv1D", "Conv2D", "AvgPool1D", "AvgPool2D", "MaxPool1D", "MaxPool2D",
    "GlobalMaxPool1D", "GlobalAvgPool1D",
]
