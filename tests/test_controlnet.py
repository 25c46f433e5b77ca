"""ControlNet pipelines at forecast speed (integrations/controlnet.py), through the real pipeline classes:
on the denoiser's forecast steps the ControlNet does not run; on compute steps everything runs as without
Spectrum."""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass

import pytest
import torch

from families import STEPS
from families_controlnet import CASES, ControlNetCase, controlnet_leaves, sd
from spectrum_cache import (SpectrumConfig, SpectrumWarning, compute_steps, disable_spectrum, enable_spectrum,
                            spectrum_summary)
from spectrum_cache.forecast import SpectrumForecaster
from spectrum_cache.integrations.adapters import resolve_adapter
from spectrum_cache.integrations.api import denoiser_hook
from spectrum_cache.integrations.controlnet import CONTROLNET_HOOK

EVERY_STEP = SpectrumConfig(warmup_steps=STEPS)
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)
PLAN = compute_steps(REAL, STEPS)

pytestmark = [pytest.mark.filterwarnings("ignore:.*__array__ implementation"),  # numpy 2 and the SD output
              pytest.mark.filterwarnings("ignore:.*has hooks of its own")]  # the block counter, on purpose


def run(pipe, kwargs, **extra) -> torch.Tensor:
    torch.manual_seed(0)  # the SD3 and FLUX pipelines sample the control image's VAE latents from the global RNG
    out = pipe(**{**kwargs, **extra}, generator=torch.Generator("cpu").manual_seed(0))
    return torch.as_tensor(out.images).float()


class Counter:
    """Runs of a leaf layer: of each ControlNet net's first layer, and of the denoiser's first block's."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.counts = [0] * len(modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def count(*_):
            self.counts[index] += 1
        return count

    def take(self) -> list[int]:
        counts, self.counts = self.counts, [0] * len(self.counts)
        return counts

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def first_layer(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


@dataclass
class Built:
    case: ControlNetCase
    pipe: object
    kwargs: dict
    baseline: torch.Tensor
    controlnet: Counter
    blocks: Counter
    baseline_passes: list[int]
    calls_per_step: int


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
    case = CASES[request.param]
    pipe, kwargs = case.build()
    denoiser = getattr(pipe, case.denoiser)
    controlnet = Counter(controlnet_leaves(pipe))
    blocks = Counter([first_layer(resolve_adapter(denoiser).blocks[0])])
    baseline = run(pipe, kwargs)
    calls = blocks.take()[0] // STEPS  # denoiser calls per step: two where FLUX runs true CFG
    yield Built(case, pipe, kwargs, baseline, controlnet, blocks, controlnet.take(), calls)
    controlnet.remove()
    blocks.remove()


@pytest.fixture
def pipe(built):
    built.controlnet.take()
    built.blocks.take()
    yield built.pipe
    disable_spectrum(built.pipe)


@contextlib.contextmanager
def no_spectrum_warnings():
    """Any SpectrumWarning raises, but the one the block counter causes on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        warnings.filterwarnings("ignore", message=".*has hooks of its own", category=SpectrumWarning)
        yield


def controlnet_hooked(pipe) -> bool:
    registry = getattr(pipe.controlnet, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(CONTROLNET_HOOK) is not None


def test_every_step_schedule_runs_the_controlnet_every_step_and_gives_todays_output(built, pipe):
    assert built.baseline_passes == [STEPS] * len(built.baseline_passes)
    enable_spectrum(pipe, EVERY_STEP)
    with no_spectrum_warnings():  # the residuals no longer make it warn
        out = run(pipe, built.kwargs)
    torch.testing.assert_close(out, built.baseline, rtol=0, atol=0)
    assert built.controlnet.take() == built.baseline_passes


def test_forecast_steps_run_neither_the_controlnet_nor_the_blocks(built, pipe):
    enable_spectrum(pipe, REAL)
    with no_spectrum_warnings():
        out = run(pipe, built.kwargs)
    assert built.controlnet.take() == [len(PLAN)] * len(built.baseline_passes)
    assert built.blocks.take() == [built.calls_per_step * len(PLAN)]
    branches = spectrum_summary(pipe).branches
    assert len(branches) == built.calls_per_step
    for branch in branches:
        assert list(branch.computed_steps) == PLAN and len(branch.forecast_steps) == STEPS - len(PLAN)
    # The last step ran: no ControlNet tensors are kept (the UNet's generation stays live until the next call).
    companion = denoiser_hook(getattr(pipe, built.case.denoiser)).residuals
    assert not companion._runs and all(r.output is None and not r.args for r in companion._records.values())
    # Close to the full run: much closer than the same run without its ControlNet is.
    error = ((out - built.baseline).norm() / built.baseline.norm()).item()
    disable_spectrum(pipe)
    scale = [0.0] * len(built.baseline_passes) if len(built.baseline_passes) > 1 else 0.0
    uncontrolled = run(pipe, built.kwargs, controlnet_conditioning_scale=scale)
    control = ((uncontrolled - built.baseline).norm() / built.baseline.norm()).item()
    assert torch.isfinite(out).all() and 0 < error < control / 4, (error, control)


def test_disable_spectrum_removes_the_controlnet_hook(built, pipe):
    enable_spectrum(pipe, REAL)
    assert controlnet_hooked(pipe)
    run(pipe, built.kwargs)
    disable_spectrum(pipe)
    assert not controlnet_hooked(pipe)
    built.controlnet.take()
    torch.testing.assert_close(run(pipe, built.kwargs), built.baseline, rtol=0, atol=0)
    assert built.controlnet.take() == built.baseline_passes


# -- the pipelines' ControlNet options ---------------------------------------------------------------
OPTIONS = {
    "scale": dict(controlnet_conditioning_scale=0.6),
    "guidance window": dict(control_guidance_start=0.2, control_guidance_end=0.7),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("name", ["sd-multi", "flux", "sd3"])
def test_conditioning_scale_and_guidance_window(name, option):
    """Where the window turns a ControlNet off, the pipelines still call it (with scale 0): on compute
    steps only, with Spectrum; the every-step schedule is today's output."""
    pipe, kwargs = CASES[name].build()
    nets = len(controlnet_leaves(pipe))
    extra = dict(OPTIONS[option])
    if nets > 1:
        extra = {k: [v, v / 2] if isinstance(v, float) else v for k, v in extra.items()}
    counter = Counter(controlnet_leaves(pipe))
    baseline = run(pipe, kwargs, **extra)
    assert not torch.equal(baseline, run(pipe, kwargs))  # the option changes the output
    counter.take()
    enable_spectrum(pipe, EVERY_STEP)
    torch.testing.assert_close(run(pipe, kwargs, **extra), baseline, rtol=0, atol=0)
    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    counter.take()
    out = run(pipe, kwargs, **extra)
    assert counter.take() == [len(PLAN)] * nets
    assert torch.isfinite(out).all() and not torch.equal(out, baseline)


# -- when the denoiser computes on a step planned as a forecast ----------------------------------------
def _nan_forecasts(monkeypatch):
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    for fit in (SpectrumForecaster, WindowedSpectrumForecaster):  # the full fit and the default window
        monkeypatch.setattr(fit, "_forecast", lambda self, step: torch.full(self.feature_shape, float("nan")))


@pytest.mark.parametrize("name", ["sd-multi", "flux-true-cfg"])
def test_a_forecast_that_falls_back_to_the_network_gets_the_controlnets_residuals(name, monkeypatch):
    """A non-finite forecast makes the denoiser run the network on a step the ControlNet skipped: the
    ControlNet runs then, its residuals reach the denoiser, and the run is today's."""
    pipe, kwargs = CASES[name].build()
    baseline = run(pipe, kwargs)
    counter = Counter(controlnet_leaves(pipe))
    _nan_forecasts(monkeypatch)
    enable_spectrum(pipe, REAL)
    with pytest.warns(SpectrumWarning, match="non-finite forecast"):
        out = run(pipe, kwargs)
    torch.testing.assert_close(out, baseline, rtol=0, atol=0)
    assert counter.take() == [STEPS] * len(counter.counts)
    assert spectrum_summary(pipe).branches[0].forecast_steps == ()


def test_a_call_that_cannot_be_placed_after_the_controlnet_skipped_gets_its_residuals(monkeypatch):
    """The ControlNet planned a forecast, then the denoiser's call was not placed (it runs the network): the
    ControlNet runs then, for the residuals the denoiser got."""
    from spectrum_cache.integrations.generation import Unplaced
    from spectrum_cache.integrations.lifecycle import Generations

    pipe, kwargs = CASES["sdxl"].build()
    baseline = run(pipe, kwargs)
    place = Generations.place

    def unplaced_off_plan(self, *args, **kwargs):
        placement = place(self, *args, **kwargs)
        if placement.step not in PLAN:
            raise Unplaced("test", None)
        return placement

    monkeypatch.setattr(Generations, "place", unplaced_off_plan)
    counter = Counter(controlnet_leaves(pipe))
    enable_spectrum(pipe, REAL)
    torch.testing.assert_close(run(pipe, kwargs), baseline, rtol=0, atol=0)
    assert counter.take() == [STEPS]


def test_guess_mode_skips_the_controlnet_and_says_when_a_fallback_cannot_reach_it(monkeypatch):
    """SD's guess mode with CFG runs the ControlNet on the cond half and concatenates zeros for the uncond
    half: forecast steps skip it as usual; a fallback to the network cannot replace the residuals the
    pipeline built, and says so."""
    pipe, kwargs = sd()
    kwargs = dict(kwargs, guess_mode=True)
    baseline = run(pipe, kwargs)
    counter = Counter(controlnet_leaves(pipe))
    enable_spectrum(pipe, EVERY_STEP)
    torch.testing.assert_close(run(pipe, kwargs), baseline, rtol=0, atol=0)
    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    counter.take()
    run(pipe, kwargs)
    assert counter.take() == [len(PLAN)]
    disable_spectrum(pipe)
    _nan_forecasts(monkeypatch)
    enable_spectrum(pipe, REAL)
    with pytest.warns(SpectrumWarning, match="residuals of its last run"):
        run(pipe, kwargs)


# -- enabling and disabling ----------------------------------------------------------------------------
def test_disabling_the_denoiser_alone_removes_the_controlnet_hook():
    pipe, kwargs = sd()
    baseline = run(pipe, kwargs)
    enable_spectrum(pipe, REAL)
    disable_spectrum(pipe.unet)
    assert not controlnet_hooked(pipe)
    torch.testing.assert_close(run(pipe, kwargs), baseline, rtol=0, atol=0)


def test_a_controlnet_serving_another_pipeline_is_refused_and_nothing_is_left_enabled():
    first, _ = sd()
    second, _ = sd()
    second.register_modules(controlnet=first.controlnet)
    enable_spectrum(first, REAL)
    with pytest.raises(ValueError, match="another pipeline's denoiser"):
        enable_spectrum(second, REAL)
    registry = getattr(second.unet, "_diffusers_hook", None)
    assert registry is None or not any(name.startswith("spectrum_cache") for name in registry.hooks)
    disable_spectrum(first)
    enable_spectrum(second, REAL)  # free again
    assert controlnet_hooked(second)


def test_spectrum_on_the_denoiser_alone_runs_every_step_and_says_to_enable_the_pipeline():
    """Without the pipeline Spectrum cannot reach its ControlNet: the residuals make the denoiser run the
    network on every step, as they did before, and the warning names the fix."""
    pipe, kwargs = CASES["flux"].build()
    baseline = run(pipe, kwargs)
    enable_spectrum(pipe.transformer, REAL, scheduler=pipe.scheduler)
    with pytest.warns(SpectrumWarning, match=r"controlnet_block_samples.*enable_spectrum\(pipe\)"):
        out = run(pipe, kwargs)
    torch.testing.assert_close(out, baseline, rtol=0, atol=0)
    assert spectrum_summary(pipe.transformer).branches[0].forecast_steps == ()


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_consecutive_generations_are_identical(name):
    pipe, kwargs = CASES[name].build()
    counter = Counter(controlnet_leaves(pipe))
    enable_spectrum(pipe, REAL)
    first = run(pipe, kwargs)
    second = run(pipe, kwargs)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert counter.take() == [2 * len(PLAN)]


@pytest.mark.parametrize("name", ["sd", "flux-multi"])
def test_a_deepcopy_of_an_enabled_pipeline_runs_its_own_controlnet_and_forecasts(name):
    case = CASES[name]
    pipe, kwargs = case.build()
    plain = run(pipe, kwargs)
    enable_spectrum(pipe, REAL)
    first = run(pipe, kwargs)
    twin = copy.deepcopy(pipe)
    assert twin.controlnet is not pipe.controlnet and controlnet_hooked(twin)
    # Passes counted on leaf modules: the copy's ControlNet and a layer inside the copy's first block.
    original_controlnet, twin_controlnet = Counter(controlnet_leaves(pipe)), Counter(controlnet_leaves(twin))
    denoiser = getattr(twin, case.denoiser)
    blocks = Counter([first_layer(resolve_adapter(denoiser).blocks[0])])
    torch.testing.assert_close(run(twin, kwargs), first, rtol=0, atol=0)
    assert twin_controlnet.take() == [len(PLAN)] * len(twin_controlnet.counts)  # skipped on forecast steps
    assert original_controlnet.take() == [0] * len(original_controlnet.counts)
    assert blocks.take() == [len(PLAN)] and len(PLAN) < STEPS  # the copy's denoiser forecasts
    with torch.no_grad():
        for parameter in twin.controlnet.parameters():
            parameter.mul_(0.5)
    halved = run(twin, kwargs)
    assert not torch.allclose(halved, first)
    torch.testing.assert_close(run(pipe, kwargs), first, rtol=0, atol=0)  # the original is untouched
    disable_spectrum(pipe)
    disable_spectrum(twin)
    assert not controlnet_hooked(pipe) and not controlnet_hooked(twin)
    torch.testing.assert_close(run(pipe, kwargs), plain, rtol=0, atol=0)
    twin_plain = run(twin, kwargs)
    assert not torch.allclose(twin_plain, plain) and not torch.allclose(twin_plain, halved)
    for counter in (original_controlnet, twin_controlnet, blocks):
        counter.remove()
