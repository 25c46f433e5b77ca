"""The four per-family checks of the diffusers integration, on every covered family."""

from __future__ import annotations

import pytest
import torch

from families import FAMILIES, STEPS
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary

EVERY_STEP = SpectrumConfig(warmup_steps=STEPS)
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)


def run(pipe, kwargs, seed: int = 0) -> torch.Tensor:
    out = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed))
    images = out.images if hasattr(out, "images") else out.frames
    return torch.as_tensor(images).float()


def first_linear(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear) or isinstance(m, torch.nn.Conv2d))


def block_pass_counter(pipe, denoiser_name: str) -> list[int]:
    """Counts runs of the first block's first layer: a skipped block never reaches it."""
    from spectrum_cache.integrations.adapters import resolve_adapter

    count = [0]
    block = resolve_adapter(getattr(pipe, denoiser_name)).blocks[0]
    first_linear(block).register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    return count


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


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return FAMILIES[request.param]


def test_every_step_schedule_is_identical_to_baseline(family):
    pipe, kwargs = family.build()
    baseline = run(pipe, kwargs)
    enable_spectrum(pipe, EVERY_STEP)
    torch.testing.assert_close(run(pipe, kwargs), baseline, rtol=0, atol=0)
    summary = spectrum_summary(pipe)
    assert summary.passes_saved == 0 and summary.branches


def test_real_schedule_skips_blocks_and_changes_output(family):
    pipe, kwargs = family.build()
    counters = {name: block_pass_counter(pipe, name) for name in family.denoisers}
    baseline = run(pipe, kwargs)
    full = {name: c[0] for name, c in counters.items()}
    for c in counters.values():
        c[0] = 0
    enable_spectrum(pipe, REAL)
    out = run(pipe, kwargs)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, baseline)
    summary = spectrum_summary(pipe)
    for name in family.denoisers:
        branches = [b for b in summary.branches if b.denoiser == name]
        n = branches[0].num_inference_steps
        expected = compute_steps(REAL, n)
        for b in branches:
            assert list(b.computed_steps) == expected, b
            assert sorted(b.computed_steps + b.forecast_steps) == list(range(n))
        # block passes scale exactly with the schedule (full ran every step)
        assert counters[name][0] * n == full[name] * len(expected)


def test_disable_restores_baseline_and_removes_hooks(family):
    pipe, kwargs = family.build()
    baseline = run(pipe, kwargs)
    enable_spectrum(pipe, REAL)
    run(pipe, kwargs)
    disable_spectrum(pipe)
    assert no_spectrum_hooks(pipe)
    torch.testing.assert_close(run(pipe, kwargs), baseline, rtol=0, atol=0)


def test_consecutive_generations_are_identical(family):
    pipe, kwargs = family.build()
    enable_spectrum(pipe, REAL)
    first = run(pipe, kwargs)
    second = run(pipe, kwargs)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
