"""The four per-family checks of the diffusers integration, on every covered family."""

from __future__ import annotations

import pytest
import torch

from dataclasses import dataclass

from families import FAMILIES, STEPS, Family
from families_modular import CASES as MODULAR_CASES
from helpers import modules_before_the_blocks, own_forward_runs
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary

EVERY_STEP = SpectrumConfig(warmup_steps=STEPS)
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)
MODES = ("independent", "paired")


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


@pytest.mark.parametrize("mode", MODES)
def test_every_step_schedule_is_identical_to_baseline(case, pipe, mode):
    enable_spectrum(pipe, EVERY_STEP.replace(guidance_forecast=mode))
    torch.testing.assert_close(run(pipe, case.kwargs), case.baseline, rtol=0, atol=0)
    summary = spectrum_summary(pipe)
    assert summary.passes_saved == 0 and summary.branches


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.filterwarnings("ignore:.*has hooks of its own")  # the block-pass counter, on purpose
def test_real_schedule_skips_blocks_and_changes_output(case, pipe, mode):
    counters, handles = {}, []
    for name in case.family.denoisers:
        counters[name], handle = block_pass_counter(pipe, name)
        handles.append(handle)
    try:
        run(pipe, case.kwargs)
        full = {name: c[0] for name, c in counters.items()}
        for c in counters.values():
            c[0] = 0
        enable_spectrum(pipe, REAL.replace(guidance_forecast=mode))
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
    # Pipelines that denoise in several runs (Helios' chunks) report each: "cond (run 2)".
    names = {b.branch.split(" (run ")[0] for b in summary.branches}
    if case.family.cfg == "separate":
        assert names == {"cond", "uncond"}
    if case.family.cfg == "separate-unnamed":
        # Two calls per step outside any cache_context: kept apart by their order within the step.
        assert names == {"default", "default[1]"}


def test_disable_restores_baseline_and_removes_hooks(case, pipe):
    enable_spectrum(pipe, REAL)
    run(pipe, case.kwargs)
    disable_spectrum(pipe)
    assert no_spectrum_hooks(pipe)
    torch.testing.assert_close(run(pipe, case.kwargs), case.baseline, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_consecutive_generations_are_identical(case, pipe, mode):
    enable_spectrum(pipe, REAL.replace(guidance_forecast=mode))
    first = run(pipe, case.kwargs)
    second = run(pipe, case.kwargs)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def _held_bytes(pipe, kwargs, mode: str) -> tuple[torch.Tensor, int]:
    enable_spectrum(pipe, REAL.replace(guidance_forecast=mode))
    out = run(pipe, kwargs)
    held = sum(b.peak_bytes for b in spectrum_summary(pipe).branches)
    disable_spectrum(pipe)
    return out, held


def test_paired_mode_pairs_the_branches_the_pipeline_runs(case, pipe):
    """Paired, the second CFG branch holds one difference tensor, not a forecaster of its own: less
    memory for every family that runs CFG (batched, named contexts, two unnamed calls), the same
    forecasts for those that do not."""
    independent, independent_bytes = _held_bytes(pipe, case.kwargs, "independent")
    paired, paired_bytes = _held_bytes(pipe, case.kwargs, "paired")
    if case.family.cfg is None:
        assert paired_bytes == independent_bytes
        torch.testing.assert_close(paired, independent, rtol=0, atol=0)
    else:
        assert paired_bytes < independent_bytes, case.family.name
        assert not torch.allclose(paired, independent)


def test_paired_equals_independent_when_the_branches_are_identical(case, pipe):
    if case.family.cfg is None:
        pytest.skip("no CFG branches")
    kwargs = dict(case.kwargs)
    for name in [k for k in kwargs if k.startswith("negative_")]:
        positive = name.removeprefix("negative_")
        if positive in kwargs:
            value = kwargs[positive]
            kwargs[name] = [v.clone() for v in value] if isinstance(value, list) else value.clone()
    independent, _ = _held_bytes(pipe, kwargs, "independent")
    paired, _ = _held_bytes(pipe, kwargs, "paired")
    torch.testing.assert_close(paired, independent, rtol=1e-4, atol=1e-4)


def test_forecast_steps_run_every_module_before_the_blocks(case, pipe):
    """Only blocks are skipped: every module a denoiser runs before its first block (the input embedders, the
    time and pooled-text embeddings, rotary embeddings, and every layer inside them) runs its own forward as often
    with Spectrum's forecast steps as without Spectrum. (The skipped blocks' own layers run on compute steps only:
    test_real_schedule_skips_blocks_and_changes_output.)"""
    before = modules_before_the_blocks({name: getattr(pipe, name) for name in case.family.denoisers},
                                       lambda: run(pipe, case.kwargs))
    for name in case.family.denoisers:
        assert any(denoiser == name for denoiser, _ in before), f"{name} runs nothing before its blocks"
    with own_forward_runs({key: module for key, (module, _) in before.items()}) as counts:
        enable_spectrum(pipe, REAL)
        try:
            run(pipe, case.kwargs)
            branches = spectrum_summary(pipe).branches
        finally:
            disable_spectrum(pipe)  # before the counters go
    assert branches and all(b.forecast_steps for b in branches)
    assert {key: count[0] for key, count in counts.items()} == {key: n for key, (_, n) in before.items()}


def test_forecast_steps_keep_no_stand_in_output_and_change_nothing(case, pipe, monkeypatch, poisoned_blanks):
    """The stand-ins of single skipped blocks (SDXL's mid_block, HiDream's double-stream blocks) give fresh tensors
    on forecast steps, not a kept copy of their last output: the images are exactly those of keeping every output,
    with the fresh tensors poisoned by NaN, and nothing is held between steps (stand_in_bytes)."""
    from spectrum_cache.integrations import skipping
    from spectrum_cache.integrations.adapters import resolve_adapter

    layouts = [resolve_adapter(getattr(pipe, name)) for name in case.family.denoisers]
    if not any(layout.stand_in_modules for layout in layouts):
        pytest.skip(f"{case.family.name}: nothing stands in for a skipped block")
    with monkeypatch.context() as keep_all:
        keep_all.setattr(skipping, "blanked", lambda value: value)
        enable_spectrum(pipe, REAL)
        kept = run(pipe, case.kwargs)
        kept_bytes = sum(b.stand_in_bytes for b in spectrum_summary(pipe).branches)
        disable_spectrum(pipe)
    assert poisoned_blanks[0] == 0
    enable_spectrum(pipe, REAL)
    blank = run(pipe, case.kwargs)
    held = sum(b.stand_in_bytes for b in spectrum_summary(pipe).branches)
    torch.testing.assert_close(blank, kept, rtol=0, atol=0)
    assert kept_bytes > 0 and poisoned_blanks[0] > 0
    assert held == 0


# -- diffusers' modular pipelines (tests/families_modular.py) -------------------------------------------
def _denoiser_rows(pipe, names) -> list[int]:
    """Hooks that record the batch of every denoiser call."""
    rows: list[int] = []
    handles = []
    for name in names:

        def count(module, args, kwargs):
            hidden = kwargs.get("hidden_states", kwargs.get("sample", kwargs.get("x", args[0] if args else None)))
            rows.append(len(hidden) if isinstance(hidden, list) else hidden.shape[0])

        handles.append(getattr(pipe, name).register_forward_pre_hook(count, with_kwargs=True))
    return rows, handles


@pytest.mark.parametrize("name,guidance", MODULAR_CASES)
def test_modular_pipeline_equals_the_classic_pipeline(name, guidance):
    """Without Spectrum, the family's modular pipeline (same components, same seed) gives the classic
    pipeline's latents, and its guidance mode is real: with CFG the denoiser sees twice the rows."""
    import families_modular

    if reason := families_modular.no_classic_reason(name):
        pytest.skip(reason)
    steps = 5  # enough for Wan2.2 to run both experts
    (mpipe, mkwargs), (pipe, kwargs) = families_modular.build_pair(name, guidance, steps)
    rows, handles = _denoiser_rows(pipe, FAMILIES[name].denoisers)
    try:
        modular = families_modular.modular_latents(name, mpipe, mkwargs, pipe, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    classic = families_modular.classic_latents(name, pipe, kwargs)
    assert modular.shape == classic.shape
    # Bitwise for most; batched-CFG families (SDXL) run cond and uncond as two calls in the modular
    # pipeline, one in the classic one.
    torch.testing.assert_close(modular, classic, rtol=1e-4, atol=1e-4)
    images = families_modular.images_per_call(kwargs)
    assert sum(rows) == steps * images * (2 if guidance == "cfg" else 1), (rows, images)
