"""The summation-to-delta check every DeepLIFT run makes, and the warning when it fails.

The contributions of a pair must add up to Δ = target(x) − target(r). What float rounding can
explain grows with the size of the numbers added and subtracted along the way, not with Δ: the
allowed error is ``sqrt(eps)·|Δ| + 256·eps·M`` where ``M = Σ|contributions| + |target(x)| +
|target(r)|`` (seed-weighted) and ``eps`` is that of the dtype the rules ran in. So an error of half
of Δ is always reported unless Δ itself is within ~512 rounding steps of the values it is the
difference of (where Δ is rounding noise too). The old rule, ``sqrt(eps)·(1 + |Δ|)``, hid a
missing half of any Δ below ``2·sqrt(eps)`` (0.18 in bfloat16).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import SummationToDeltaWarning

#: rounding steps of the magnitude M that a deep float pass may accumulate (measured once over 60
#: random float32 models of tests/random_models.py: at most ~10; a 10 kb dilated CNN in
#: tests/test_low_precision.py runs without a warning)
ROUNDING_STEPS = 256


def allowed_error(target_delta: Tensor, magnitude: Tensor, dtype: torch.dtype) -> Tensor:
    """The largest |Σ contributions − Δ| float rounding explains, per (target, pair)."""
    eps = torch.finfo(dtype).eps
    return eps ** 0.5 * target_delta.abs() + ROUNDING_STEPS * eps * magnitude


@dataclass(frozen=True)
class WorstError:
    """The pair whose error is the largest multiple of what rounding explains."""

    ratio: float      # |error| / allowed error (above 1: not rounding)
    error: float      # Σ contributions − Δ
    delta: float      # Δ = seed·(target(x) − target(r))
    allowed: float
    example: int
    reference: int
    target: int


def worst_of(error: Tensor, target_delta: Tensor, magnitude: Tensor, dtype: torch.dtype,
             examples: Tensor, references: Tensor, targets: list[int]) -> WorstError:
    """The worst (target, pair) of a batch; all tensors are (T, P)."""
    allowed = allowed_error(target_delta, magnitude, dtype)
    ratio = error.abs() / allowed.clamp_min(torch.finfo(dtype).tiny)
    value, flat = ratio.flatten().max(0)
    t, p = divmod(int(flat), ratio.shape[1])
    return WorstError(value.item(), error[t, p].item(), target_delta[t, p].item(),
                      allowed[t, p].item(), int(examples[p]), int(references[p]), targets[t])


def warn_if_not_conserved(worst: WorstError | None, max_routing: str, stacklevel: int = 4) -> None:
    """A :class:`SummationToDeltaWarning` naming the example, reference and target, when the worst
    error is more than rounding explains."""
    if worst is None or worst.ratio <= 1:
        return
    hint = ("max_routing='gradient' (the original library's max pooling) does not conserve it with "
            "a non-constant reference; the default 'conserving' does" if max_routing == "gradient"
            else "please report this with the model")
    share = f" ({abs(worst.error) / abs(worst.delta):.3g} of |Δ|)" if worst.delta else ""
    warnings.warn(SummationToDeltaWarning(
        f"contributions do not sum to the target's difference from the reference: Δ = "
        f"{worst.delta:.4g}, missed by {worst.error:.3g}{share} for example {worst.example}, "
        f"reference {worst.reference}, target {worst.target} (float rounding explains up to "
        f"{worst.allowed:.2g}); {hint}"), stacklevel=stacklevel)
