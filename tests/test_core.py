"""The integration core outside a standard pipeline call: hand-written loops, other threads, the
step source (CacheContext fields, a loop's own word, schedulers never set), other libraries' hooks on
skipped modules, and planning as a function without a module."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from families import STEPS, flux
from helpers import flux_inputs
from spectrum_cache import SpectrumConfig, SpectrumWarning, compute_steps, denoising_loop, enable_spectrum, spectrum_summary

REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)


@torch.no_grad()
def cfg_loop(transformer, n: int, order=("cond", "uncond"), fields: bool = False, timesteps=None) -> torch.Tensor:
    """A hand-written true-CFG loop: each step calls the denoiser in cache_context("cond") and ("uncond")."""
    cond, uncond = flux_inputs(None, seed=1), flux_inputs(None, seed=2)
    x = cond.pop("hidden_states")
    uncond.pop("hidden_states")
    inputs = {"cond": cond, "uncond": uncond}
    for i in range(n):
        t = torch.tensor([timesteps[i] if timesteps is not None else 1.0 - i / n])
        out = {}
        for name in order:
            extra = dict(step_index=i, num_inference_steps=n) if fields else {}
            with transformer.cache_context(name, **extra):
                out[name] = transformer(hidden_states=x, timestep=t, **inputs[name])[0]
        x = x - (out["uncond"] + 2.0 * (out["cond"] - out["uncond"])) / n
    return x


def branches(target) -> dict[str, tuple[int, ...]]:
    return {b.branch: b.computed_steps for b in spectrum_summary(target).branches}


# -- 1: paired forecasting in a hand-written loop ------------------------------------------------
@pytest.mark.parametrize("order", [("cond", "uncond"), ("uncond", "cond")])
def test_paired_hand_loop_forecasts_both_branches_every_generation_in_either_order(order):
    pipe, _ = flux()
    transformer = pipe.transformer
    config = REAL.replace(num_inference_steps=STEPS, guidance_forecast="paired")
    enable_spectrum(transformer, config)
    expected = tuple(compute_steps(config, STEPS))
    first = cfg_loop(transformer, STEPS, order)
    assert branches(transformer) == {"cond": expected, "uncond": expected}
    second = cfg_loop(transformer, STEPS, order)
    assert branches(transformer) == {"cond": expected, "uncond": expected}
    torch.testing.assert_close(second, first, rtol=0, atol=0)


# -- 2: other threads see the whole model during a forecast call ----------------------------------
def test_another_thread_sees_the_whole_model_during_a_forecast_call():
    pipe, kwargs = flux()
    transformer = pipe.transformer
    full_keys = set(transformer.state_dict())
    full_modules = sum(1 for _ in transformer.named_modules())
    full_blocks = len(list(transformer.transformer_blocks)) + len(list(transformer.single_transformer_blocks))
    seen = []

    def look() -> None:
        seen.append((set(transformer.state_dict()), sum(1 for _ in transformer.named_modules()),
                     len(list(transformer.transformer_blocks)) + len(list(transformer.single_transformer_blocks)),
                     sum(1 for _ in transformer.parameters())))

    def during_head(module, args):
        # The head runs on every step, forecast steps included: look from another thread meanwhile.
        worker = threading.Thread(target=look)
        worker.start()
        worker.join()

    handle = transformer.norm_out.register_forward_pre_hook(during_head)
    enable_spectrum(pipe, REAL)
    try:
        pipe(**kwargs)
    finally:
        handle.remove()
    (summary,) = spectrum_summary(pipe).branches
    assert summary.forecast_steps
    assert len(seen) == STEPS
    parameters = sum(1 for _ in transformer.parameters())
    for keys, modules, blocks, params in seen:
        assert keys == full_keys and modules == full_modules and blocks == full_blocks and params == parameters


def test_to_from_another_thread_during_a_forecast_call_converts_every_parameter():
    pipe, kwargs = flux()
    transformer = pipe.transformer
    converted = []

    def convert_once(module, args):
        if converted or not transformer._diffusers_hook.get_hook("spectrum_cache").gate.shut:
            return
        worker = threading.Thread(target=lambda: converted.append(
            [p.dtype for p in transformer.to(torch.float64).parameters()]))
        worker.start()
        worker.join()

    handle = transformer.norm_out.register_forward_pre_hook(convert_once)
    enable_spectrum(pipe, REAL)
    with pytest.raises(RuntimeError):  # the rest of this call mixes dtypes; the model itself is whole
        pipe(**kwargs)
    handle.remove()
    assert converted and set(converted[0]) == {torch.float64}
    assert {p.dtype for p in transformer.parameters()} == {torch.float64}
    # The model works in its new dtype: the next generation runs and forecasts.
    transformer.to(torch.float32)
    pipe(**kwargs)
    assert spectrum_summary(pipe).branches[0].forecast_steps


# -- 4: a hand-written loop that steps its own scheduler ------------------------------------------
def _own_scheduler_loop(pipe, scheduler, n: int) -> None:
    transformer = pipe.transformer
    inputs = flux_inputs(None)
    x = inputs.pop("hidden_states")
    scheduler.set_timesteps(n)
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = transformer(hidden_states=x, timestep=(t / 1000).reshape(1), **inputs)[0]
            x = scheduler.step(v, t, x).prev_sample


def test_a_loop_stepping_its_own_scheduler_is_not_planned_from_the_pipelines_unset_one():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    own = FlowMatchEulerDiscreteScheduler()
    with pytest.warns(SpectrumWarning, match="no set_timesteps\\(\\) call.*denoising_loop"):
        _own_scheduler_loop(pipe, own, STEPS)
    assert spectrum_summary(pipe).branches == ()  # nothing planned, not a 1000-step plan


def test_denoising_loop_with_the_loops_scheduler_plans_its_steps():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    own = FlowMatchEulerDiscreteScheduler()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        with denoising_loop(pipe, scheduler=own):
            _own_scheduler_loop(pipe, own, STEPS)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.num_inference_steps == STEPS
    assert list(branch.computed_steps) == compute_steps(REAL, STEPS)


def test_denoising_loop_with_a_step_count():
    pipe, _ = flux()
    transformer = pipe.transformer
    enable_spectrum(transformer, REAL.replace(num_inference_steps=50))
    with denoising_loop(transformer, num_inference_steps=STEPS):
        cfg_loop(transformer, STEPS)
    assert branches(transformer) == {"cond": tuple(compute_steps(REAL, STEPS)),
                                     "uncond": tuple(compute_steps(REAL, STEPS))}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "one of scheduler= .* got neither"),
    ({"num_inference_steps": 4, "scheduler": object()}, "got both"),
    ({"num_inference_steps": 0}, "num_inference_steps must be an integer >= 1"),
    ({"scheduler": object()}, "scheduler must be a diffusers scheduler"),
])
def test_denoising_loop_rejects_bad_arguments(kwargs, message):
    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    with pytest.raises(ValueError, match=message):
        with denoising_loop(pipe, **kwargs):
            pass


def test_denoising_loop_needs_spectrum_enabled():
    pipe, _ = flux()
    with pytest.raises(ValueError, match="Spectrum is not enabled on FluxPipeline"):
        with denoising_loop(pipe, num_inference_steps=4):
            pass


# -- 5: other hooks on skipped modules ------------------------------------------------------------
def test_a_hook_on_a_skipped_module_gets_one_warning_naming_it():
    """A hook on a block: one warning, and it sees the compute steps only. A hook on an input embedder: no
    warning, since forecast steps run the embedders too, and it sees every call."""
    pipe, kwargs = flux()
    transformer = pipe.transformer
    calls, embeds = [], []
    transformer.transformer_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    transformer.x_embedder.register_forward_pre_hook(lambda *a: embeds.append(1))
    enable_spectrum(pipe, REAL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe(**kwargs)
        pipe(**kwargs)
    notes = [str(w.message) for w in caught if issubclass(w.category, SpectrumWarning)]
    assert len([n for n in notes if "transformer_blocks.0 has hooks" in n]) == 1
    assert not [n for n in notes if "x_embedder" in n]
    assert all("run only on compute steps" in n for n in notes)
    assert len(calls) == 2 * len(compute_steps(REAL, STEPS))
    assert len(embeds) == 2 * STEPS


def test_no_warning_without_other_hooks():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        pipe(**kwargs)


# -- 6: CacheContext step fields ------------------------------------------------------------------
def test_cache_context_step_fields_place_the_calls():
    """The loop's timesteps repeat a value (which the timestep-value clock would take for one step), and
    the configured step count is wrong: the fields say where the loop is."""
    pipe, _ = flux()
    transformer = pipe.transformer
    enable_spectrum(transformer, REAL.replace(num_inference_steps=50))
    timesteps = [1.0, 0.9, 0.9, *[0.8 - 0.05 * i for i in range(STEPS - 3)]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        first = cfg_loop(transformer, STEPS, fields=True, timesteps=timesteps)
    expected = tuple(compute_steps(REAL, STEPS))
    assert branches(transformer) == {"cond": expected, "uncond": expected}
    assert spectrum_summary(transformer).branches[0].num_inference_steps == STEPS
    second = cfg_loop(transformer, STEPS, fields=True, timesteps=timesteps)  # a new generation at step 0
    torch.testing.assert_close(second, first, rtol=0, atol=0)


# -- discovery runs once per generation -----------------------------------------------------------
def test_the_step_source_is_looked_for_once_per_generation(monkeypatch):
    from spectrum_cache.integrations import lifecycle

    walks = []
    real = lifecycle.find_source
    monkeypatch.setattr(lifecycle, "find_source", lambda *args: walks.append(1) or real(*args))
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    pipe(**kwargs)
    pipe(**kwargs)
    assert len(walks) == 2
    assert list(spectrum_summary(pipe).branches[0].computed_steps) == compute_steps(REAL, STEPS)


# -- planning without a module -------------------------------------------------------------------
def test_planning_is_a_function_of_generation_branch_and_step():
    from spectrum_cache.integrations.generation import BareClock, Generation
    from spectrum_cache.integrations.planning import plan
    from spectrum_cache.integrations.steps import StepSource

    config = REAL.replace(num_inference_steps=STEPS)
    generation = Generation(config, "denoiser", BareClock(STEPS), StepSource())
    first = plan(generation, "cond", 0)
    assert not first.forecast and not first.final  # nothing recorded yet
    first.trajectory.forecaster.update(0, torch.ones(2, 3))
    schedule = compute_steps(config, STEPS)
    for step in range(1, STEPS):
        decision = plan(generation, "cond", step)
        assert decision.trajectory is first.trajectory
        assert decision.forecast == (step not in schedule)
        assert decision.final == (step == STEPS - 1)
    assert not plan(generation, "cond", 5, has_extra_inputs=True).forecast
    # New input shapes: a new trajectory with nothing recorded, so the network runs.
    other = plan(generation, "cond", 5, input_key=(("x", (1, 2)),))
    assert other.trajectory is not first.trajectory and not other.forecast
    assert plan(generation, "uncond", 5).trajectory is not other.trajectory


# -- a pipeline call that denoises in several runs ------------------------------------------------
def test_a_pipeline_call_with_several_runs_reports_every_run():
    """Helios denoises its video chunk after chunk, each with timesteps of its own: the call's summary lists
    every run, so the passes it reports saved are the passes saved."""
    from families_new import helios

    pipe, kwargs = helios()
    block = pipe.transformer.blocks[0]
    passes = []
    block.register_forward_pre_hook(lambda *a: passes.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpectrumWarning)  # the counting hook is deliberate
        enable_spectrum(pipe, REAL)
        pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    summary = spectrum_summary(pipe)
    labels = [b.branch for b in summary.branches]
    assert labels == ["cond", "uncond", "cond (run 2)", "uncond (run 2)"]
    assert len(passes) == sum(len(b.computed_steps) for b in summary.branches)
    calls = sum(len(b.computed_steps) + len(b.forecast_steps) for b in summary.branches)
    assert summary.passes_saved == calls - len(passes)


# -- denoisers with more than one output head ------------------------------------------------------
@pytest.mark.parametrize("cls, head, extra", [("LTX2VideoTransformer3DModel", "norm_out", "audio_norm_out"),
                                              ("Kandinsky6Transformer3DModel", "out_layer", "audio_out_layer")])
def test_every_head_gets_its_share_of_the_forecast(cls, head, extra):
    """The audio stream's head reads the same blocks' output as the video head: on forecast steps both get
    their part of one forecast. With reuse, each head's input on a forecast step is the last compute step's,
    for the audio head as for the video head (without it, the audio head would read features that skipped
    the blocks)."""
    from denoisers import DENOISERS, STEPS as N, build, denoise
    from diffusers.hooks import HookRegistry, ModelHook

    class Capture(ModelHook):  # inside Spectrum's head hook, registered first: sees the input the head gets
        def __init__(self, into):
            super().__init__()
            self.into = into

        def pre_forward(self, module, *args, **kwargs):
            self.into.append(args[0].clone())
            return args, kwargs

    entry = next(e for e in DENOISERS if e.cls == cls)
    model, inputs = build(entry)
    seen = {head: [], extra: []}
    for name, into in seen.items():
        HookRegistry.check_if_exists_or_initialize(getattr(model, name)).register_hook(Capture(into), "capture")
    config = SpectrumConfig(num_inference_steps=N, warmup_steps=3, flex_window=0.75, forecaster="reuse")
    enable_spectrum(model, config)
    denoise(entry, model, inputs)
    computed = compute_steps(config, N)
    assert len(seen[head]) == len(seen[extra]) == N
    for step in range(N):
        if step in computed:
            continue
        last = max(c for c in computed if c < step)
        for name in seen:
            torch.testing.assert_close(seen[name][step], seen[name][last], rtol=0, atol=0)
    assert not torch.equal(seen[extra][computed[-1]], seen[extra][computed[-2]])  # the audio stream does move


# -- pipelines with a denoiser for the unconditional branch ---------------------------------------
class _TwoDenoiserPipeline:
    """Stands for Ideogram 4's layout: CFG through a second denoiser, ``unconditional_transformer``."""

    def __init__(self, transformer, unconditional_transformer):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.transformer, self.unconditional_transformer = transformer, unconditional_transformer
        self.scheduler = FlowMatchEulerDiscreteScheduler()

    @property
    def components(self) -> dict:
        return {"transformer": self.transformer, "unconditional_transformer": self.unconditional_transformer,
                "scheduler": self.scheduler}


def test_an_unconditional_denoiser_gets_spectrum_of_its_own_and_one_model_in_two_roles_once():
    from spectrum_cache import disable_spectrum

    first, _ = flux()
    second, _ = flux()
    pipe = _TwoDenoiserPipeline(first.transformer, second.transformer)
    enable_spectrum(pipe, REAL)
    hooks = [m._diffusers_hook.get_hook("spectrum_cache") for m in (first.transformer, second.transformer)]
    assert all(h is not None for h in hooks) and hooks[0] is not hooks[1]
    assert [h.denoiser_name for h in hooks] == ["transformer", "unconditional_transformer"]
    disable_spectrum(pipe)
    same = _TwoDenoiserPipeline(first.transformer, first.transformer)
    enable_spectrum(same, REAL)  # not "already enabled": one model, hooked once
    assert first.transformer._diffusers_hook.get_hook("spectrum_cache").denoiser_name == "transformer"
    disable_spectrum(same)


# -- a running pipeline without a scheduler -------------------------------------------------------
def test_a_pipeline_without_a_scheduler_is_placed_by_the_configured_step_count():
    """Echo's modular blocks step their own sigmas, with no scheduler component: the pipeline is still the
    running call's, and the configured num_inference_steps (or denoising_loop) places its calls; without
    either, the warning says which to set."""
    from diffusers import DiffusionPipeline

    class SigmaLoopPipeline(DiffusionPipeline):
        def __init__(self, transformer):
            super().__init__()
            self.register_modules(transformer=transformer)

        @torch.no_grad()
        def __call__(self, n: int):
            inputs = flux_inputs(None)
            x = inputs.pop("hidden_states")
            for i in range(n):
                x = x - self.transformer(hidden_states=x, timestep=torch.tensor([1.0 - i / n]), **inputs)[0] / n
            return x

    pipe = SigmaLoopPipeline(flux()[0].transformer)
    enable_spectrum(pipe, REAL)
    with pytest.warns(SpectrumWarning, match="SigmaLoopPipeline has no scheduler.*num_inference_steps=N"):
        pipe(STEPS)
    assert spectrum_summary(pipe).branches == ()
    from spectrum_cache import disable_spectrum

    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL.replace(num_inference_steps=STEPS))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        pipe(STEPS)
    (branch,) = spectrum_summary(pipe).branches
    assert list(branch.computed_steps) == compute_steps(REAL, STEPS)
