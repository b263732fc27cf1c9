"""The scoring methods, and which rule each one asks every nonlinearity to use.

How a rule computes lives with the layer (``layers/activations.py``); *which* rule applies where
is decided here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from .errors import InputError
from .graph import Model
from .layers.base import Layer
from .layers.linear import BatchNorm, Conv, Dense
from .layers.shape import Identity, Permute


@dataclass(frozen=True)
class Method:
    """``rule``: the nonlinearity rule (None: resolved per layer, genomics default).
    ``uses_reference``: DeepLIFT-style (differences from a reference) or gradient-style.
    ``output``: what ``attribute`` returns — contributions ``m·Δx``, the multipliers themselves,
    multipliers × input, or integrated gradients. ``sums_to_delta``: the contributions add up to
    target(x) − target(r) (checked on every run, with a warning when they do not)."""

    name: str
    rule: str | None
    uses_reference: bool
    output: str
    sums_to_delta: bool = False

    @property
    def integrated(self) -> bool:
        """Averages gradients along the path from the reference (integrated gradients)."""
        return self.output == "integrated_gradients"

    @property
    def takes_references(self) -> bool:
        """Needs references: DeepLIFT-style methods and path-integrated gradients."""
        return self.uses_reference or self.integrated

    def pairs_per_batch(self, batch_size: int, steps: int, n_refs: int = 1) -> int:
        """(example, reference) pairs per batch so that a batch holds ``batch_size`` rows
        (integrated gradients runs every pair at ``steps`` points of its path); with
        ``n_refs`` references per example, fewer than a batch's pairs, whole examples: every
        batch's values then have the same shapes (as many example rows), so each batch can take
        over the memory of the one before (``engine.PairRunner._hand_over``)."""
        if self.integrated:
            return max(1, batch_size // steps)
        if self.uses_reference and 1 < n_refs < batch_size:
            return batch_size - batch_size % n_refs
        return batch_size

    def from_multipliers(self, multipliers: Tensor, x: Tensor) -> Tensor:
        """A gradient-style method's scores from its multipliers at a layer with values ``x``."""
        return multipliers * x if self.output == "gradient_x_input" else multipliers


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("rescale", "rescale", True, "contributions", sums_to_delta=True),
    Method("reveal_cancel", "reveal_cancel", True, "contributions", sums_to_delta=True),
    Method("genomics_default", None, True, "contributions", sums_to_delta=True),
    Method("guided_backprop_rescale", "guided_backprop_rescale", True, "contributions"),
    Method("pass_through", "pass_through", True, "contributions"),
    Method("gradient", "gradient", False, "multipliers"),
    Method("gradient_x_input", "gradient", False, "gradient_x_input"),
    Method("guided_backprop", "guided_backprop", False, "multipliers"),
    Method("deconvnet", "deconvnet", False, "multipliers"),
    Method("integrated_gradients", "gradient", False, "integrated_gradients"),
]}


#: the original library's NonlinearMxtsMode values name the same methods
_ORIGINAL_NAMES = {"rescale": "rescale", "revealcancel": "reveal_cancel",
                   "deeplift_genomicsdefault": "genomics_default", "gradient": "gradient",
                   "guidedbackprop": "guided_backprop", "guidedbackproprescale": "guided_backprop_rescale",
                   "deconvnet": "deconvnet", "passthrough": "pass_through"}


def get_method(name: str) -> Method:
    """A method by name (``"reveal_cancel"``, ``"reveal-cancel"`` or the original's
    ``NonlinearMxtsMode.RevealCancel`` all work)."""
    if isinstance(name, Method):
        return name
    key = str(name).lower().replace("-", "_")
    key = _ORIGINAL_NAMES.get(key, key)
    if key not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[key]


#: layers the genomics default looks through to find what feeds a nonlinearity (a Permute is how
#: a channels-last Keras convolution is expressed in our channels-first layers)
_TRANSPARENT = (BatchNorm, Identity, Permute)


def genomics_default_rule(model: Model, layer: Layer, strict: bool = False) -> str:
    """RevealCancel for a nonlinearity fed by a dense layer, Rescale for one fed by a convolution
    (looking through batch norm and identity/dropout layers), as the DeepLIFT paper recommends
    for genomics. Anything else gets Rescale, or an error when ``strict`` (the original's
    behaviour)."""
    source = model.layers[layer.inputs[0]]
    while isinstance(source, _TRANSPARENT) and source.inputs:
        source = model.layers[source.inputs[0]]
    if isinstance(source, Dense):
        return "reveal_cancel"
    if isinstance(source, Conv):
        return "rescale"
    if strict:
        raise InputError(f"genomics default: unsure how to resolve the rule of {layer.name!r}, "
                         f"which follows {source.name!r} ({type(source).__name__}); expected a "
                         "dense or convolution layer before it")
    return "rescale"


def rule_resolver(model: Model, method: Method, strict: bool = False,
                  overrides: dict[str, str] | None = None) -> Callable[[Layer], str]:
    """A function layer -> rule name, memoised per layer."""
    cache: dict[str, str] = dict(overrides or {})

    def rule_for(layer: Layer) -> str:
        if layer.name not in cache:
            cache[layer.name] = (method.rule if method.rule is not None
                                 else genomics_default_rule(model, layer, strict))
        return cache[layer.name]
    return rule_for
