"""Feature forecasters: pure torch, no knowledge of diffusers."""

from __future__ import annotations

from .base import FeatureForecaster
from .baselines import ReuseForecaster, TaylorForecaster
from .chebyshev import SpectrumForecaster, chebyshev_basis
from .pairing import PRIMARY, SECONDARY, PairedForecaster

__all__ = [
    "FeatureForecaster",
    "PRIMARY",
    "PairedForecaster",
    "SECONDARY",
    "ReuseForecaster",
    "SpectrumForecaster",
    "TaylorForecaster",
    "chebyshev_basis",
    "make_forecaster",
]


def make_forecaster(
    kind: str,
    num_inference_steps: int,
    degree: int = 4,
    ridge_lambda: float = 0.1,
    blend_weight: float = 0.5,
) -> FeatureForecaster:
    """A new forecaster by name: ``chebyshev`` (Spectrum), ``reuse``, ``taylor1`` or ``taylor2``."""
    if kind == "chebyshev":
        return SpectrumForecaster(degree, ridge_lambda, blend_weight, num_inference_steps)
    if kind == "reuse":
        return ReuseForecaster(num_inference_steps)
    if kind in ("taylor1", "taylor2"):
        return TaylorForecaster(int(kind[-1]), num_inference_steps)
    raise ValueError(f"forecaster must be one of chebyshev, reuse, taylor1, taylor2; got {kind!r}.")
