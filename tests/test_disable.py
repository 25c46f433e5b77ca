"""Switching Spectrum off: diffusers' own disable_cache(), and the report kept after disable_spectrum."""

from __future__ import annotations

import logging

import pytest
import torch

from families import STEPS, flux, wan22
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary

REAL = SpectrumConfig(warmup_steps=3)


def images(pipe, kwargs, seed: int = 0) -> torch.Tensor:
    out = pipe(**kwargs, generator=torch.Generator().manual_seed(seed))
    return out.images if hasattr(out, "images") else out.frames


def no_hooks_left(module: torch.nn.Module) -> bool:
    return all(getattr(m, "_diffusers_hook", None) is None or not m._diffusers_hook.hooks for m in module.modules())


def test_diffusers_disable_cache_disables_spectrum() -> None:
    pipe, kwargs = flux()
    plain = images(pipe, kwargs)
    enable_spectrum(pipe, REAL)
    assert pipe.transformer.is_cache_enabled
    assert not torch.equal(images(pipe, kwargs), plain)
    pipe.transformer.disable_cache()  # diffusers' API: used to raise "Cache config SpectrumConfig is not supported"
    assert not pipe.transformer.is_cache_enabled and no_hooks_left(pipe.transformer)
    assert torch.equal(images(pipe, kwargs), plain)
    assert "disable_cache" not in vars(pipe.transformer)  # diffusers' own method is back
    enable_spectrum(pipe, REAL)  # and Spectrum can be switched on again
    assert pipe.transformer.is_cache_enabled


def test_diffusers_caches_still_enable_and_disable_after_spectrum() -> None:
    from diffusers.hooks import FirstBlockCacheConfig

    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    disable_spectrum(pipe)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    pipe.transformer.disable_cache()
    assert not pipe.transformer.is_cache_enabled and no_hooks_left(pipe.transformer)


def test_summary_stays_readable_after_disable() -> None:
    pipe, kwargs = wan22()
    enable_spectrum(pipe, REAL)
    images(pipe, kwargs)
    live = spectrum_summary(pipe)
    assert live.enabled
    disable_spectrum(pipe)
    kept = spectrum_summary(pipe)
    assert not kept.enabled and kept.branches == live.branches
    assert "disabled since" in str(kept)
    assert {b.denoiser for b in kept.branches} == {"transformer", "transformer_2"}

    enable_spectrum(pipe, REAL)  # a new run replaces the kept report
    assert spectrum_summary(pipe).enabled and spectrum_summary(pipe).branches == ()


def test_summary_after_diffusers_disable_cache() -> None:
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    images(pipe, kwargs)
    pipe.transformer.disable_cache()
    (branch,) = spectrum_summary(pipe).branches
    assert list(branch.computed_steps) == compute_steps(REAL, STEPS)


def test_summary_without_any_spectrum_run_still_raises() -> None:
    pipe, _ = flux()
    with pytest.raises(ValueError, match="Spectrum is not enabled on FluxPipeline"):
        spectrum_summary(pipe)


def test_enable_and_disable_log_through_the_package_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Informational messages go to the logging module (diffusers' get_logger); SpectrumWarning stays
    for the fail-closed events."""
    pipe, _ = flux()
    with caplog.at_level(logging.INFO, logger="spectrum_cache"):
        enable_spectrum(pipe, REAL)
        pipe.transformer.disable_cache()
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("spectrum_cache")]
    assert any(level == logging.INFO and "Spectrum enabled on transformer" in text for _, level, text in messages)
    # A warning: shown at Python's default logging level, since the caller asked diffusers, not Spectrum.
    assert any(level == logging.WARNING and "disable_cache(): removing Spectrum" in text for _, level, text in messages)
