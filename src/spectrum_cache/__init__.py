"""spectrum-cache: training-free Spectrum feature forecasting for diffusion sampling.

Implements "Adaptive Spectral Feature Forecasting for Diffusion Sampling Acceleration"
(Han et al., CVPR 2026, arXiv 2603.01623).
"""

from __future__ import annotations

from .config import SpectrumConfig
from .forecast import ReuseForecaster, SpectrumForecaster, TaylorForecaster
from .schedule import compute_steps

__version__ = "0.1.0"

__all__ = [
    "ReuseForecaster",
    "SpectrumConfig",
    "SpectrumForecaster",
    "TaylorForecaster",
    "compute_steps",
]
