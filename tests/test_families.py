"""The four per-family checks of the diffusers integration, on every covered family."""

from __future__ import annotations

import pytest
import torch

from dataclasses import dataclass

from families import FAMILIES, STEPS, Family
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary

EVERY_STEP = SpectrumConfig(warmup_steps=STEPS)
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)


def run(pipe, kwargs, seed: int = 0) -> torch.Tensor:
    out = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed))
    images = out.images if hasattr(out, "images") else out.frames
    return torch.as_tensor(images).float()


def first_linear(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear) or isinstance(m, torch.nn.Conv2d))


def block_pass_counter(pipe, denoiser_name: str):
    """Counts runs of the first block's first layer: a skipped block never reaches it."""
    from spectrum_cache.integrations.adapters import resolve_adapter

    count = [0]
    block = resolve_adapter(getattr(pipe, denoiser_name)).blocks[0]
    handle = first_linear(block).register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    return count, handle


def no_spectrum_hooks(pipe) -> bool:
    for name in ("transformer", "transformer_2", "unet"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for sub in module.modules():
            registry = getattr(sub, "_diffusers_hook", None)
            if registry is not None and any(h.startswith("spectrum_cache") for h in registry.hooks):
                return False
    return True


@dataclass
class Case:
    family: Family
    pipe: object
    kwargs: dict
    baseline: torch.Tensor


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request):
    """One pipeline per family, built once; each test leaves it without Spectrum."""
    family = FAMILIES[request.param]
    pipe, kwargs = family.build()
    return Case(family, pipe, kwargs, run(pipe, kwargs))


@pytest.fixture
def pipe(case):
    yield case.pipe
    disable_spectrum(case.pipe)


def test_every_step_schedule_is_identical_to_baseline(case, pipe):
    enable_spectrum(pipe, EVERY_STEP)
    torch.testing.assert_close(run(pipe, case.kwargs), case.baseline, rtol=0, atol=0)
    summary = spectrum_summary(pipe)
    assert summary.passes_saved == 0 and summary.branches


def test_real_schedule_skips_blocks_and_changes_output(case, pipe):
    counters, handles = {}, []
    for name in case.family.denoisers:
        counters[name], handle = block_pass_counter(pipe, name)
        handles.append(handle)
    try:
        run(pipe, case.kwargs)
        full = {name: c[0] for name, c in counters.items()}
        for c in counters.values():
            c[0] = 0
        enable_spectrum(pipe, REAL)
        out = run(pipe, case.kwargs)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, case.baseline)
    summary = spectrum_summary(pipe)
    for name in case.family.denoisers:
        branches = [b for b in summary.branches if b.denoiser == name]
        assert branches, f"{name} never ran with Spectrum"
        n = branches[0].num_inference_steps
        expected = compute_steps(REAL, n)
        assert len(expected) < n
        for b in branches:
            assert list(b.computed_steps) == expected, b
            assert sorted(b.computed_steps + b.forecast_steps) == list(range(n))
        # Block passes scale exactly with the schedule: the baseline ran the blocks every step.
        assert counters[name][0] * n == full[name] * len(expected)
    if case.family.cfg == "separate":
        assert {b.branch for b in summary.branches} == {"cond", "uncond"}
    if case.family.cfg == "separate-unnamed":
        # Two calls per step outside any cache_context: kept apart by their order within the step.
        assert {b.branch for b in summary.branches} == {"default", "default[1]"}


def test_disable_restores_baseline_and_removes_hooks(case, pipe):
    enable_spectrum(pipe, REAL)
    run(pipe, case.kwargs)
    disable_spectrum(pipe)
    assert no_spectrum_hooks(pipe)
    torch.testing.assert_close(run(pipe, case.kwargs), case.baseline, rtol=0, atol=0)


def test_consecutive_generations_are_identical(case, pipe):
    enable_spectrum(pipe, REAL)
    first = run(pipe, case.kwargs)
    second = run(pipe, case.kwargs)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
