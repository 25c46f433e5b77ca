"""spectrum-cache: training-free Spectrum feature forecasting for diffusion sampling.

Implements "Adaptive Spectral Feature Forecasting for Diffusion Sampling Acceleration"
(Han et al., CVPR 2026, arXiv 2603.01623).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Every public name is imported on first use (PEP 562): the core needs torch, the front end diffusers,
# and `spectrum-cache --help` neither. Where each name lives:
_LAZY_NAMES: dict[str, str] = {
    "SpectrumConfig": ".config",
    "calibrate": ".integrations.calibrate",
    "compute_steps": ".schedule",
    "ReuseForecaster": ".forecast",
    "SpectrumForecaster": ".forecast",
    "TaylorForecaster": ".forecast",
    "enable_spectrum": ".integrations",
    "disable_spectrum": ".integrations",
    "denoising_loop": ".integrations",
    "spectrum_summary": ".integrations",
    "recording": ".integrations",
    "SpectrumSummary": ".integrations",
    "SpectrumWarning": ".integrations",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> object:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'spectrum_cache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
