"""Feature forecasters: pure torch, no knowledge of diffusers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import DIFFERENCE_FORECASTERS, FORECASTERS
from .base import FeatureForecaster, all_finite
from .baselines import ReuseForecaster, TaylorForecaster
from .chebyshev import SpectrumForecaster, WindowedSpectrumForecaster, chebyshev_basis
from .pairing import PRIMARY, SECONDARY, BatchedPair, PairBranch, PairedForecaster

__all__ = [
    "all_finite",
    "BatchedPair",
    "FeatureForecaster",
    "PRIMARY",
    "PairBranch",
    "PairedForecaster",
    "SECONDARY",
    "make_difference_forecaster",
    "ReuseForecaster",
    "SpectrumForecaster",
    "TaylorForecaster",
    "WindowedSpectrumForecaster",
    "chebyshev_basis",
    "make_forecaster",
]


def make_forecaster(
    kind: str,
    num_inference_steps: int,
    degree: int = 4,
    ridge_lambda: float = 0.1,
    blend_weight: float = 0.5,
    time_points: Sequence[float] | None = None,
    history: int | None = None,
    state_device: str | None = None,
    held_dtype: torch.dtype | None = None,
) -> FeatureForecaster:
    """A new forecaster by name: ``chebyshev`` (Spectrum; fitted to every recorded step, or to the last
    ``history`` when that is set; its state kept on ``state_device``, its features in ``held_dtype`` where
    that is exact), ``reuse``, ``taylor1`` or ``taylor2``; ``time_points`` as in FeatureForecaster."""
    if kind == "chebyshev" and history is not None:
        return WindowedSpectrumForecaster(history, degree, ridge_lambda, blend_weight, num_inference_steps, time_points,
                                          state_device, held_dtype)
    if kind == "chebyshev":
        return SpectrumForecaster(degree, ridge_lambda, blend_weight, num_inference_steps, time_points, state_device,
                                  held_dtype)
    if state_device is not None:
        raise ValueError(f"state_device needs the Chebyshev forecaster, got kind {kind!r}.")
    if kind == "reuse":
        return ReuseForecaster(num_inference_steps, time_points)
    if kind in ("taylor1", "taylor2"):
        return TaylorForecaster(int(kind[-1]), num_inference_steps, time_points)
    raise ValueError(f"forecaster must be one of {', '.join(FORECASTERS)}; got {kind!r}.")


def make_difference_forecaster(kind: str, num_inference_steps: int,
                               time_points: Sequence[float] | None = None) -> FeatureForecaster:
    """The forecaster of the difference between two CFG branches: ``reuse`` (the last measured
    difference), ``linear`` (extrapolated from the last two) or ``chebyshev`` (a degree-2 Chebyshev
    fit with a strong ridge penalty, lambda = 10, so it stays close to a slowly varying mean)."""
    if kind == "reuse":
        return ReuseForecaster(num_inference_steps, time_points)
    if kind == "linear":
        return TaylorForecaster(1, num_inference_steps, time_points)
    if kind == "chebyshev":
        return SpectrumForecaster(2, 10.0, 1.0, num_inference_steps, time_points)
    raise ValueError(f"difference forecaster must be one of {', '.join(DIFFERENCE_FORECASTERS)}; got {kind!r}.")
