"""The rule registries: what each named nonlinearity rule computes, and layers for users' own ops.

*Which* rule a nonlinearity gets is the method's choice (``methods.py``); *how* a rule computes
lives with its layer family (``layers/activations.py``), which registers its rules here under
their names. Users extend both the same way the built-ins do:

* ``register_nonlinearity_rule(name, rule)`` — a new rule for every elementwise nonlinearity (an
  object with ``split`` and ``backward``, see :class:`NonlinearityRule`);
* ``register_op(op, build)`` — a layer for an op the PyTorch front end has no rule for, e.g. a
  ``torch.library`` custom op: ``build(**constant_arguments)`` returns a deeplift
  :class:`~deeplift.layers.Layer` whose inputs are the op's tensor arguments that depend on the
  model's inputs, in order. For an elementwise function ``f`` the layer is
  ``deeplift.layers.Elementwise(f, derivative)``, which gets every nonlinearity rule::

      deeplift.rules.register_op(torch.ops.mylib.softclip,
                                 lambda: deeplift.layers.Elementwise(softclip, softclip_grad))

  A registered layer goes through the same checks as a built-in one (tests/test_rules.py:
  summation-to-delta for the DeepLIFT methods, gradients equal to autograd).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from torch import Tensor

# The layer types (deeplift.layers.base: Layer, State, Split, Multipliers) are named in the
# docstrings only: the layer families import this module to register their rules, so it
# imports nothing from them.


class NonlinearityRule(Protocol):
    """How one named rule treats an elementwise nonlinearity ``y = f(x)``.

    ``split`` gives ``(Δy⁺, Δy⁻)`` (used when a later RevealCancel needs it); ``backward`` maps
    the output's ``(m⁺, m⁻)`` to the input's (``m⁻ is None`` means equal to ``m⁺``). Rules for
    DeepLIFT methods must keep ``m⁺·Δx⁺ + m⁻·Δx⁻ = m⁺_out·Δy⁺ + m⁻_out·Δy⁻`` for any reference.
    """

    def split(self, layer: Any, state: Any) -> tuple[Tensor, Tensor]: ...

    def backward(self, layer: Any, state: Any, m_pos: Tensor,
                 m_neg: Tensor | None) -> list[tuple[Tensor, Tensor | None]]: ...


_NONLINEARITY_RULES: dict[str, NonlinearityRule] = {}
_OP_LAYERS: dict[Any, Callable[..., Any]] = {}


def register_nonlinearity_rule(name: str, rule: NonlinearityRule) -> NonlinearityRule:
    """Make ``rule`` the nonlinearity rule called ``name`` (replacing one of that name)."""
    if not (callable(getattr(rule, "split", None)) and callable(getattr(rule, "backward", None))):
        raise TypeError(f"rule {name!r} needs split(layer, state) and backward(layer, state, m_pos, m_neg)")
    _NONLINEARITY_RULES[name] = rule
    return rule


def nonlinearity_rule(name: str) -> NonlinearityRule:
    """The rule registered as ``name``."""
    try:
        return _NONLINEARITY_RULES[name]
    except KeyError:
        raise ValueError(f"unknown nonlinearity rule {name!r}; registered: "
                         f"{sorted(_NONLINEARITY_RULES)}") from None


def nonlinearity_rule_names() -> list[str]:
    return sorted(_NONLINEARITY_RULES)


def register_op(op: Any, build: Callable[..., Any]) -> None:
    """Give the PyTorch front end a layer for ``op`` (an op overload or packet, such as
    ``torch.ops.mylib.f`` or ``torch.ops.mylib.f.default``). ``build`` receives the op's
    arguments that do not depend on the model's inputs, by their schema names."""
    if not callable(build):
        raise TypeError("register_op needs a callable that returns a deeplift Layer")
    _OP_LAYERS[getattr(op, "overloadpacket", op)] = build


def unregister_op(op: Any) -> None:
    _OP_LAYERS.pop(getattr(op, "overloadpacket", op), None)


def op_layer_builder(op: Any) -> Callable[..., Any] | None:
    """The user's builder for ``op`` (matched by its overload packet), if one is registered."""
    return _OP_LAYERS.get(getattr(op, "overloadpacket", op))
