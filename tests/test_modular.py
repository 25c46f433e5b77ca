"""diffusers' modular pipelines as first-class step sources, per family and guidance mode
(tests/families_modular.py): their scheduler, their guider's CFG decision and branch names
(``pred_cond`` / ``pred_uncond``), Wan2.2's expert split, and several modular pipelines around one
transformer (modular pipelines also run in the family tests)."""

from __future__ import annotations

import warnings

import pytest
import torch

import families_modular
from families_modular import CASES
from spectrum_cache import SpectrumConfig, SpectrumWarning, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary

STEPS = 8
EVERY_STEP = SpectrumConfig(warmup_steps=STEPS)
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)


def quiet_run(mpipe, kwargs) -> torch.Tensor:
    """The modular run's latents, failing on any SpectrumWarning (diffusers' own warnings are let be)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", SpectrumWarning)
        return families_modular.run(mpipe, kwargs)


def by_branch(pipe) -> dict[tuple[str, str], object]:
    return {(b.denoiser, b.branch): b for b in spectrum_summary(pipe).branches}


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{g}" for n, g in CASES])
def case(request):
    name, guidance = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpipe, kwargs = families_modular.build(name, guidance, STEPS)
    return name, guidance, mpipe, kwargs, quiet_run(mpipe, kwargs)


@pytest.fixture
def modular(case):
    yield case
    disable_spectrum(case[2])


def test_every_step_schedule_is_identical_to_the_modular_baseline(modular):
    _, _, mpipe, kwargs, baseline = modular
    enable_spectrum(mpipe, EVERY_STEP)
    torch.testing.assert_close(quiet_run(mpipe, kwargs), baseline, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["independent", "paired"])
def test_the_real_schedule_forecasts_every_branch_the_guider_runs(modular, mode):
    name, guidance, mpipe, kwargs, baseline = modular
    enable_spectrum(mpipe, REAL.replace(guidance_forecast=mode))
    out = quiet_run(mpipe, kwargs)
    assert torch.isfinite(out).all() and not torch.allclose(out, baseline)
    branches = by_branch(mpipe)
    denoisers = {d for d, _ in branches}
    expected = {"cfg": {"cond", "uncond"}, "none": {"cond"}, "distilled": {"default"}}[guidance]
    for denoiser in denoisers:
        assert {b for d, b in branches if d == denoiser} == expected, (name, branches)
    for b in branches.values():
        assert list(b.computed_steps) == compute_steps(REAL, b.num_inference_steps)
        assert bool(b.forecast_steps) == (b.num_inference_steps > REAL.warmup_steps)
    # Wan2.2's experts split the steps between them.
    assert sum({d: b.num_inference_steps for (d, _), b in branches.items()}.values()) == STEPS
    if guidance == "cfg":
        cond, uncond = (branches[next(iter(denoisers)), b] for b in ("cond", "uncond"))
        if mode == "paired":  # the uncond branch holds only its difference from cond
            assert uncond.peak_bytes < cond.peak_bytes
        else:
            assert uncond.peak_bytes == cond.peak_bytes


def test_modular_and_classic_pipelines_forecast_alike(case):
    """With Spectrum on both, the modular pipeline gives the classic pipeline's latents (same components)."""
    name, guidance, *_ = case
    if reason := families_modular.no_classic_reason(name):
        pytest.skip(reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (mpipe, mkwargs), (pipe, kwargs) = families_modular.build_pair(name, guidance, STEPS)
        enable_spectrum(mpipe, REAL)
        modular = families_modular.modular_latents(name, mpipe, mkwargs, pipe, kwargs)
        disable_spectrum(mpipe)
        enable_spectrum(pipe, REAL)
        classic = families_modular.classic_latents(name, pipe, kwargs)
    torch.testing.assert_close(modular.float(), classic.float(), rtol=1e-4, atol=1e-4)


def test_two_modular_pipelines_on_one_transformer_each_follow_their_own_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, kwargs = families_modular.build("flux", "distilled", STEPS)
        second = first.blocks.init_pipeline()
        second.update_components(transformer=first.transformer, scheduler=FlowMatchEulerDiscreteScheduler())
    enable_spectrum(first, REAL)
    enable_spectrum(second, REAL)  # the second shares the transformer: it joins its Spectrum
    quiet_run(first, kwargs)
    quiet_run(second, {**kwargs, "num_inference_steps": 20})
    (mine,) = spectrum_summary(second).branches
    assert mine.num_inference_steps == 20 and list(mine.computed_steps) == compute_steps(REAL, 20)
    (theirs,) = spectrum_summary(first).branches
    assert theirs.num_inference_steps == STEPS and list(theirs.computed_steps) == compute_steps(REAL, STEPS)


# -- Ideogram 4: CFG through a second denoiser ---------------------------------------------------------


def _ideogram4(steps=STEPS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpipe, kwargs = families_modular.build("ideogram4", "cfg", steps)
    return mpipe, kwargs


def test_ideogram4_spectrum_on_the_pipeline_forecasts_both_denoisers():
    """Ideogram 4 runs CFG as a second denoiser (``unconditional_transformer``) on every step: Spectrum enabled on
    the pipeline puts its own forecaster on each; the every-step schedule gives the latents of no Spectrum, and
    the real schedule forecasts on both by ``compute_steps``."""
    mpipe, kwargs = _ideogram4()
    baseline = quiet_run(mpipe, kwargs)
    try:
        enable_spectrum(mpipe, EVERY_STEP)
        torch.testing.assert_close(quiet_run(mpipe, kwargs), baseline, rtol=0, atol=0)
        disable_spectrum(mpipe)
        enable_spectrum(mpipe, REAL)
        out = quiet_run(mpipe, kwargs)
        assert torch.isfinite(out).all() and not torch.allclose(out, baseline)
        branches = by_branch(mpipe)
        assert {d for d, _ in branches} == {"transformer", "unconditional_transformer"}, branches
        for b in branches.values():
            assert b.num_inference_steps == STEPS
            assert list(b.computed_steps) == compute_steps(REAL, STEPS)
            assert b.forecast_steps
    finally:
        disable_spectrum(mpipe)
