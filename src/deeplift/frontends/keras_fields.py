"""Type checks of Keras layer config fields, so a broken file names the layer and the key.

Without them a string where Keras writes an integer surfaces much later as
``invalid literal for int()`` or ``'float' object is not iterable``, naming nothing; and an input
layer declaring a length of 10^12 fails as an allocation error. Fields are checked after
normalisation (``keras_format._normalise_config``), so per-dimension lists are already lists.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelFormatError

#: most elements one example of one input may declare (2^31: 8 GiB of float32 per example)
MAX_INPUT_ELEMENTS = 1 << 31

_INT_FIELDS = {"units", "filters", "kernel_size", "strides", "pool_size", "dilation_rate",
               "depth_multiplier", "size", "n", "groups", "target_shape", "dims"}
_NESTED_INT_FIELDS = {"cropping", "padding"}  # ZeroPadding/Cropping: int, pairs, or pairs of pairs
_BOOL_FIELDS = {"use_bias", "center", "scale", "keepdims", "trainable"}
_NUMBER_FIELDS = {"rate", "epsilon", "momentum", "alpha", "negative_slope", "max_value",
                  "threshold", "theta", "stddev"}
_STR_FIELDS = {"activation", "data_format", "interpolation"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(v: Any, depth: int = 1) -> bool:
    if _is_int(v):
        return True
    return depth > 0 and isinstance(v, list) and all(_ints(x, depth - 1) for x in v)


def check_layer_fields(cls: str, cfg: dict, source: str, layer: str) -> None:
    """Raise ModelFormatError naming ``layer`` and the key when a field has the wrong type."""
    def bad(key: str, expected: str) -> ModelFormatError:
        value = repr(cfg[key])
        value = value if len(value) <= 40 else value[:37] + "..."
        return ModelFormatError(f"{source}: layer '{layer}' ({cls}): config field '{key}' is {value} "
                                f"({type(cfg[key]).__name__}), expected {expected}")

    for key, value in cfg.items():
        if value is None:
            continue
        if key in _INT_FIELDS and not _ints(value):
            raise bad(key, "an integer or a list of integers")
        if key in _NESTED_INT_FIELDS and not isinstance(value, str) and not _ints(value, 2):
            raise bad(key, "an integer, a list of integers or a list of pairs")
        if key == "padding" and "Padding" not in cls and not isinstance(value, str):
            raise bad(key, "'valid', 'same' or 'causal'")
        if key in _BOOL_FIELDS and not isinstance(value, bool):
            raise bad(key, "true or false")
        if key in _NUMBER_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(key, "a number")
        if key in _STR_FIELDS and not isinstance(value, str):
            raise bad(key, "a string")
    if cls == "InputLayer" and cfg.get("batch_shape") is not None:
        _check_input_shape(cfg, source, layer)


def _check_input_shape(cfg: dict, source: str, layer: str) -> None:
    shape = cfg["batch_shape"]
    if not isinstance(shape, list) or not all(d is None or (_is_int(d) and d >= 0) for d in shape):
        raise ModelFormatError(f"{source}: input layer '{layer}': config field 'batch_shape' is "
                               f"{str(shape)[:40]}, expected a list of sizes (non-negative integers "
                               "or null)")
    elements = 1
    for d in shape[1:]:
        elements *= d or 1
    if elements > MAX_INPUT_ELEMENTS:
        raise ModelFormatError(f"{source}: input layer '{layer}' declares examples of shape "
                               f"{tuple(shape[1:])} ({elements} elements), more than the limit of "
                               f"{MAX_INPUT_ELEMENTS}")
