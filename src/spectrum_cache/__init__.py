"""spectrum-cache: training-free Spectrum feature forecasting for diffusion sampling.

Implements "Adaptive Spectral Feature Forecasting for Diffusion Sampling Acceleration"
(Han et al., CVPR 2026, arXiv 2603.01623).
"""

from __future__ import annotations

from .config import SpectrumConfig
from .forecast import ReuseForecaster, SpectrumForecaster, TaylorForecaster
from .schedule import compute_steps

__version__ = "0.1.0"

# The diffusers front end is imported on first use, so the core needs nothing but torch.
_INTEGRATION_NAMES = ("enable_spectrum", "disable_spectrum", "spectrum_summary", "SpectrumSummary", "SpectrumWarning")

__all__ = [
    "ReuseForecaster",
    "SpectrumConfig",
    "SpectrumForecaster",
    "TaylorForecaster",
    "compute_steps",
    *_INTEGRATION_NAMES,
]


def __getattr__(name: str) -> object:
    if name in _INTEGRATION_NAMES:
        from . import integrations

        return getattr(integrations, name)
    raise AttributeError(f"module 'spectrum_cache' has no attribute {name!r}")
