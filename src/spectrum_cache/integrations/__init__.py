"""Front ends that run Spectrum inside other libraries' models (diffusers)."""

from __future__ import annotations

from .adapters import ADAPTERS, DenoiserAdapter, UnsupportedModelError
from .api import denoising_loop, disable_spectrum, enable_spectrum, spectrum_summary
from .hooks import SpectrumWarning
from .recording import RecordedRun, Recording, recording
from .summary import BranchSummary, SpectrumSummary

__all__ = [
    "ADAPTERS",
    "BranchSummary",
    "DenoiserAdapter",
    "RecordedRun",
    "Recording",
    "SpectrumSummary",
    "SpectrumWarning",
    "UnsupportedModelError",
    "denoising_loop",
    "disable_spectrum",
    "enable_spectrum",
    "recording",
    "spectrum_summary",
]
