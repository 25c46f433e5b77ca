"""spectrum-cache used adversarially (offload, sibling pipelines, threads,
copies, torch.compile, bad configs, messages, the summary). One section per kind of use."""

from __future__ import annotations

import copy
import gc
import io
import pickle
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from families import STEPS, flux, sdxl
from families_image import z_image
from spectrum_cache import (
    SpectrumConfig,
    SpectrumForecaster,
    SpectrumWarning,
    compute_steps,
    disable_spectrum,
    enable_spectrum,
    spectrum_summary,
)
from spectrum_cache.integrations import UnsupportedModelError
from helpers import block_passes, denoise_loop, flux_inputs, latents

REAL = SpectrumConfig(warmup_steps=3)
EXPECTED_PASSES = len(compute_steps(REAL, STEPS))  # FLUX has one block pass per network pass


def _other_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def _sibling(pipe, scheduler):
    """A pipeline around ``pipe``'s transformer with its own scheduler (what from_pipe gives)."""
    from diffusers import FluxPipeline

    return FluxPipeline.from_pipe(pipe, scheduler=scheduler)


# -- 1, 2: offloading -------------------------------------------------------------------------------
def _offload(pipe, kind: str) -> None:
    if kind == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    elif kind == "group":
        pipe.transformer.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    else:
        # enable_sequential_cpu_offload's wrapping (accelerate hooks on the denoiser and on every submodule
        # holding weights) without moving the weights to "meta", which accelerate cannot do on a CPU-only torch.
        from accelerate.hooks import AlignDevicesHook, add_hook_to_module, attach_align_device_hook

        attach_align_device_hook(pipe.transformer, execution_device=torch.device("cpu"), offload=False)
        add_hook_to_module(pipe.transformer, AlignDevicesHook(io_same_device=True), append=True)


def _offload_and_enable(pipe, kind: str, order: str) -> None:
    if order == "offload-then-enable":
        _offload(pipe, kind)
        enable_spectrum(pipe, REAL)
    else:
        enable_spectrum(pipe, REAL)
        _offload(pipe, kind)


@pytest.mark.parametrize("kind", ["model", "sequential", "group"])
@pytest.mark.parametrize("order", ["offload-then-enable", "enable-then-offload"])
def test_every_generation_forecasts_with_offload_in_either_order(kind, order):
    pipe, kwargs = flux()
    baseline = latents(pipe, kwargs)
    _offload_and_enable(pipe, kind, order)
    passes = block_passes(pipe.transformer)
    outputs = []
    for _ in range(3):
        passes[0] = 0
        outputs.append(latents(pipe, kwargs))
        assert passes[0] == EXPECTED_PASSES
    assert not torch.equal(outputs[0], baseline)
    torch.testing.assert_close(outputs[2], outputs[0], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["model", "sequential"])
@pytest.mark.parametrize("order", ["offload-then-enable", "enable-then-offload"])
def test_disable_leaves_accelerate_offload_working(kind, order, monkeypatch):
    from accelerate.hooks import AlignDevicesHook, CpuOffload

    pipe, kwargs = flux()
    baseline = latents(pipe, kwargs)
    _offload_and_enable(pipe, kind, order)
    latents(pipe, kwargs)
    disable_spectrum(pipe)

    hook_class = CpuOffload if kind == "model" else AlignDevicesHook
    onloads = []
    original = hook_class.pre_forward

    def counting(self, module, *args, **kwargs):
        onloads.append(module)
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(hook_class, "pre_forward", counting)
    passes = block_passes(pipe.transformer)
    for _ in range(2):  # with model offload the second one runs after diffusers re-applied its hooks
        onloads.clear()
        passes[0] = 0
        out = latents(pipe, kwargs)
        assert sum(m is pipe.transformer for m in onloads) == STEPS  # accelerate's hook runs on every call
        assert passes[0] == STEPS  # and Spectrum's does not come back
        torch.testing.assert_close(out, baseline, rtol=0, atol=0)


@pytest.mark.parametrize("order", ["offload-then-enable", "enable-then-offload"])
def test_disable_leaves_group_offload_hooks_in_place(order):
    pipe, kwargs = flux()
    baseline = latents(pipe, kwargs)

    def hook_names():
        return sorted(
            (name, hook)
            for name, module in pipe.transformer.named_modules()
            for hook in getattr(getattr(module, "_diffusers_hook", None), "hooks", {})
        )

    if order == "offload-then-enable":
        _offload(pipe, "group")
        before = hook_names()
        enable_spectrum(pipe, REAL)
    else:
        enable_spectrum(pipe, REAL)
        _offload(pipe, "group")
        before = [entry for entry in hook_names() if not entry[1].startswith("spectrum")]
    latents(pipe, kwargs)
    disable_spectrum(pipe)
    assert hook_names() == before
    torch.testing.assert_close(latents(pipe, kwargs), baseline, rtol=0, atol=0)


# -- 3: the step count follows the pipeline that runs -----------------------------------------------
def test_sibling_pipeline_with_its_own_scheduler_is_planned_from_it():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)  # the enabling pipeline ran 12 steps
    sibling = _sibling(pipe, _other_scheduler())
    passes = block_passes(pipe.transformer)
    # Not enabled on it, the sibling's runs are not seen: its calls run the network, and the warning says why.
    with pytest.warns(SpectrumWarning, match=r"enable_spectrum\(sibling\)"):
        latents(sibling, kwargs, num_inference_steps=20)
    assert passes[0] == 20
    with pytest.raises(ValueError, match="already enabled on FluxTransformer2DModel with another config"):
        enable_spectrum(sibling, REAL.replace(degree=3))
    enable_spectrum(sibling)  # joins the transformer's Spectrum, with its config
    passes[0] = 0
    latents(sibling, kwargs, num_inference_steps=20)
    (branch,) = spectrum_summary(sibling).branches
    assert branch.num_inference_steps == 20
    assert list(branch.computed_steps) == compute_steps(REAL, 20)
    assert passes[0] == len(compute_steps(REAL, 20))
    assert spectrum_summary(pipe).branches[0].num_inference_steps == STEPS  # its own report is its own


@torch.no_grad()
def test_enabling_pipeline_gone_says_why_the_step_count_is_unknown():
    pipe, _ = flux()
    transformer = pipe.transformer
    enable_spectrum(pipe, REAL)
    del pipe
    gc.collect()
    passes = block_passes(transformer)
    with pytest.warns(SpectrumWarning, match="pipeline Spectrum was enabled on no longer exists"):
        denoise_loop(transformer, 10, **flux_inputs(transformer))
    assert passes[0] == 10


@torch.no_grad()
def test_bare_denoiser_follows_the_scheduler_it_was_given():
    pipe, _ = flux()
    t, scheduler = pipe.transformer, _other_scheduler()
    enable_spectrum(t, REAL, scheduler=scheduler)
    passes = block_passes(t)
    inputs = flux_inputs(t)
    for steps in (16, 8):
        passes[0] = 0
        scheduler.set_timesteps(steps)
        x = inputs["hidden_states"]
        for timestep in scheduler.timesteps:
            v = t(**{**inputs, "hidden_states": x}, timestep=timestep.expand(1) / 1000)[0]
            x = scheduler.step(v, timestep, x, return_dict=False)[0]
        (branch,) = spectrum_summary(t).branches
        assert branch.num_inference_steps == steps
        assert list(branch.computed_steps) == compute_steps(REAL, steps) and passes[0] == len(branch.computed_steps)
    scheduler.set_timesteps(16)
    with pytest.warns(SpectrumWarning, match="step_index does not advance"):
        for timestep in scheduler.timesteps:  # a loop that never calls scheduler.step()
            t(**inputs, timestep=timestep.expand(1) / 1000)


@torch.no_grad()
def test_a_hand_loop_on_a_pipelines_transformer_without_set_timesteps_is_not_planned_from_stale_ones():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    t = pipe.transformer
    passes = block_passes(t)
    with pytest.warns(SpectrumWarning, match="timesteps are those of a finished generation"):
        denoise_loop(t, 10, **flux_inputs(t))
    assert passes[0] == 10


# -- 4: threads sharing one transformer -----------------------------------------------------------
def test_threads_sharing_a_transformer_match_sequential_runs():
    pipe, kwargs = flux()
    sibling = _sibling(pipe, _other_scheduler())
    enable_spectrum(pipe, REAL)
    enable_spectrum(sibling, REAL)
    runs = {"a": (pipe, {**kwargs, "num_inference_steps": 12}), "b": (sibling, {**kwargs, "num_inference_steps": 8})}
    expected = {name: latents(p, kw) for name, (p, kw) in runs.items()}

    def yield_thread(pipeline, step, timestep, callback_kwargs):
        time.sleep(0.001)  # hand the GIL over every step, so the two generations interleave
        return {}

    for _ in range(3):
        results, errors = {}, []

        def work(name):
            try:
                p, kw = runs[name]
                results[name] = latents(p, kw, callback_on_step_end=yield_thread)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(name,)) for name in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for name in runs:
            torch.testing.assert_close(results[name], expected[name], rtol=0, atol=0)
    assert spectrum_summary(sibling).branches[0].num_inference_steps == 8


# -- 5: copies and saving -------------------------------------------------------------------------
@torch.no_grad()
def test_deepcopy_runs_its_own_weights_with_its_own_spectrum():
    pipe, _ = flux()
    original = pipe.transformer
    config = SpectrumConfig(num_inference_steps=10, warmup_steps=3)
    enable_spectrum(original, config)
    clone = copy.deepcopy(original)
    for parameter in clone.parameters():
        parameter.mul_(0.5)
    plain = copy.deepcopy(clone)
    disable_spectrum(plain)
    inputs = flux_inputs(original)
    t = torch.tensor([1.0])
    out_clone = clone(timestep=t, **inputs)[0]
    torch.testing.assert_close(out_clone, plain(timestep=t, **inputs)[0], rtol=0, atol=0)
    assert not torch.allclose(out_clone, original(timestep=t, **inputs)[0])
    passes = block_passes(clone)
    denoise_loop(clone, 10, **flux_inputs(clone))
    assert passes[0] == len(compute_steps(config))
    assert spectrum_summary(clone).passes_saved > 0


def test_deepcopy_of_an_enabled_pipeline_runs_its_own_transformer():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    first = latents(pipe, kwargs)
    twin = copy.deepcopy(pipe)
    assert twin.transformer is not pipe.transformer
    passes = block_passes(twin.transformer)
    torch.testing.assert_close(latents(twin, kwargs), first, rtol=0, atol=0)
    assert passes[0] == EXPECTED_PASSES
    assert spectrum_summary(twin).passes_saved > 0


def test_saving_an_enabled_transformer_fails_naming_spectrum():
    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    with pytest.raises(pickle.PicklingError, match="Spectrum enabled.*disable_spectrum"):
        torch.save(pipe.transformer, io.BytesIO())
    disable_spectrum(pipe)
    torch.save(pipe.transformer, io.BytesIO())  # and nothing of Spectrum is left that would stop it


def test_pickling_a_gated_block_list_fails_naming_spectrum():
    """A block list's class is made at enable (skipping._GatedIteration): pickling it names the way out as the
    hooks do, whichever of them pickle meets first in a model; deepcopy still copies it."""
    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    blocks = pipe.transformer.transformer_blocks
    with pytest.raises(pickle.PicklingError, match="Spectrum enabled.*disable_spectrum"):
        pickle.dumps(blocks)
    twin = copy.deepcopy(blocks)
    assert type(twin) is type(blocks) and twin[0] is not blocks[0]
    disable_spectrum(pipe)
    pickle.dumps(blocks)


# -- 6: Z-Image forecasts its (list) output -------------------------------------------------------
def test_z_image_forecasts_its_output():
    pipe, kwargs = z_image()
    baseline = latents(pipe, kwargs)
    config = SpectrumConfig(warmup_steps=3, forecast_output=True)
    enable_spectrum(pipe, config)
    out = latents(pipe, kwargs)
    (branch,) = spectrum_summary(pipe).branches
    assert list(branch.computed_steps) == compute_steps(config, STEPS)
    assert len(branch.forecast_steps) == STEPS - len(branch.computed_steps)
    assert torch.isfinite(out).all() and not torch.allclose(out, baseline)


# -- 7, 8: torch.compile --------------------------------------------------------------------------
@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def test_regional_compile_with_fullgraph_across_shapes_and_cfg(fresh_dynamo):
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=1))
    pipe.transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
    negative = {"negative_prompt_embeds": torch.randn(1, 6, 24), "negative_pooled_prompt_embeds": torch.randn(1, 20)}
    calls = [
        {"height": 16, "width": 16},
        {"height": 24, "width": 24, "num_images_per_prompt": 1},  # another resolution and batch (the builder runs 2)
        {"height": 16, "width": 16, "true_cfg_scale": 2.0, **negative},  # cond and uncond contexts
    ]
    for overrides in calls:
        latents(pipe, kwargs, num_inference_steps=4, **overrides)
        assert spectrum_summary(pipe).passes_saved > 0


def test_whole_model_compile_after_or_before_enabling_compiles_two_graphs(fresh_dynamo):
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    eager = latents(pipe, kwargs)
    # Compiled before enabling: Spectrum goes onto the module torch.compile wraps.
    disable_spectrum(pipe)
    pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    enable_spectrum(pipe, REAL)
    compiled = latents(pipe, kwargs)
    graphs = fresh_dynamo["stats"]["unique_graphs"]
    assert graphs == 2  # one for compute steps, one for forecast steps: none per timestep
    assert sum(fresh_dynamo["graph_break"].values()) <= 1  # only where Spectrum's bookkeeping runs
    latents(pipe, kwargs)
    assert fresh_dynamo["stats"]["unique_graphs"] == graphs  # the next generation compiles nothing new
    torch.testing.assert_close(compiled, eager)
    assert spectrum_summary(pipe).passes_saved == STEPS - EXPECTED_PASSES


# -- 9: bad configs fail at construction or enable time ----------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("flex_window", float("inf"), "flex_window must be a finite number >= 0"),
        ("window_size", float("inf"), "window_size must be a finite number >= 1"),
        ("ridge_lambda", float("inf"), "ridge_lambda must be a finite number >= 0"),
        ("ridge_lambda", float("nan"), "ridge_lambda must be a finite number >= 0"),
        ("degree", 100000, r"degree must be an integer in \[0, 32\]"),
    ],
)
def test_unusable_values_are_refused_naming_the_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        SpectrumConfig(**{field: value})


def test_a_scheduler_that_is_not_one_is_refused():
    pipe, _ = flux()
    with pytest.raises(ValueError, match="scheduler must be a diffusers scheduler .* got str"):
        enable_spectrum(pipe.transformer, REAL, scheduler="x")
    assert not getattr(pipe.transformer, "_diffusers_hook", None) or not pipe.transformer._diffusers_hook.hooks


# -- 10, 11: warnings -----------------------------------------------------------------------------
@torch.no_grad()
def test_bare_loop_past_the_step_count_warns_once_and_runs_the_network():
    pipe, _ = flux()
    t = pipe.transformer
    config = SpectrumConfig(num_inference_steps=10, warmup_steps=3)
    enable_spectrum(t, config)
    passes = block_passes(t)
    with pytest.warns(SpectrumWarning, match="ran past SpectrumConfig.num_inference_steps=10") as caught:
        denoise_loop(t, 20, **flux_inputs(t))
        denoise_loop(t, 20, **flux_inputs(t))
    assert sum("ran past" in str(w.message) for w in caught) == 1
    assert passes[0] == 2 * (len(compute_steps(config)) + 10)


@torch.no_grad()
def test_singular_ridge_system_warns_naming_degree_and_lambda():
    pipe, _ = flux()
    t = pipe.transformer
    enable_spectrum(t, SpectrumConfig(num_inference_steps=20, degree=20, ridge_lambda=0))
    with pytest.warns(SpectrumWarning, match="degree=20, ridge_lambda=0") as caught:
        denoise_loop(t, 20, **flux_inputs(t))
    assert sum("jitter" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        disable_spectrum(t)
        enable_spectrum(t, SpectrumConfig(num_inference_steps=20))  # the defaults need no jitter
        denoise_loop(t, 20, **flux_inputs(t))


def test_forecaster_reports_the_jitter_it_needed():
    gen = torch.Generator().manual_seed(0)
    singular = SpectrumForecaster(degree=6, ridge_lambda=0.0, num_inference_steps=20)
    regular = SpectrumForecaster(num_inference_steps=20)
    for step in (0, 1, 2):
        feature = torch.randn(4, generator=gen)
        singular.update(step, feature)
        regular.update(step, feature)
    singular.predict(5)
    regular.predict(5)
    assert singular.ridge_jitter > 0 and regular.ridge_jitter == 0


# -- 12: messages ---------------------------------------------------------------------------------
def test_scheduler_with_a_pipeline_is_refused():
    pipe, _ = flux()
    with pytest.raises(ValueError, match="scheduler= is for a bare denoiser"):
        enable_spectrum(pipe, REAL, scheduler=_other_scheduler())
    assert not getattr(pipe.transformer, "_diffusers_hook", None) or not pipe.transformer._diffusers_hook.hooks


@pytest.mark.parametrize("function", [disable_spectrum, spectrum_summary])
def test_errors_name_the_function_called(function):
    with pytest.raises(TypeError, match=f"^{function.__name__} takes a diffusers pipeline"):
        function(None if function is disable_spectrum else "x")


def test_disable_on_a_pipeline_without_a_denoiser_is_a_no_op():
    class NoDenoiser:
        components = {"vae": torch.nn.Linear(2, 2)}

    disable_spectrum(NoDenoiser())


def test_modules_that_are_not_denoisers_are_named_as_such():
    from diffusers import AutoencoderKL

    for module in (AutoencoderKL(block_out_channels=(8,), norm_num_groups=8), torch.nn.Linear(2, 2)):
        with pytest.raises(UnsupportedModelError, match=f"{type(module).__name__} is not a denoiser"):
            enable_spectrum(module)


def test_numpy_integers_are_integers():
    config = SpectrumConfig(num_inference_steps=np.int64(10), warmup_steps=np.int32(3), degree=np.int64(4))
    assert config.degree == 4 and type(config.degree) is int
    assert compute_steps(config, np.int64(10)) == compute_steps(SpectrumConfig(warmup_steps=3), 10)
    assert SpectrumConfig(ridge_lambda=np.float32(0.5)).ridge_lambda == 0.5


# -- 13: the summary says what ran ----------------------------------------------------------------
def test_summary_of_sdxl_with_denoising_end_counts_the_steps_that_ran():
    pipe, kwargs = sdxl()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs, num_inference_steps=20, denoising_end=0.6)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.num_inference_steps == 12
    assert sorted(branch.computed_steps + branch.forecast_steps) == list(range(12))
    assert list(branch.computed_steps) == compute_steps(REAL, 12)


def test_summary_of_z_image_with_cfg_truncation_lists_every_step():
    pipe, kwargs = z_image()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs, cfg_truncation=0.5)
    branches = spectrum_summary(pipe).branches
    assert len(branches) == 2  # batched cond+uncond, then cond alone
    steps = sorted(s for b in branches for s in b.computed_steps + b.forecast_steps)
    assert steps == list(range(STEPS))


def test_summary_of_dpm_karras_has_no_phantom_branch():
    from diffusers import DPMSolverMultistepScheduler

    pipe, kwargs = sdxl()
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs, num_inference_steps=60)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.branch == "default" and branch.num_inference_steps == 60
    assert sorted(branch.computed_steps + branch.forecast_steps) == list(range(60))


# -- what held before the redesign, kept ----------------------------------------------------------
def test_a_clean_rerun_after_an_interrupt():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    expected = latents(pipe, kwargs)

    def interrupt(pipeline, step, timestep, callback_kwargs):
        pipeline._interrupt = step >= 4
        return {}

    latents(pipe, kwargs, callback_on_step_end=interrupt)
    torch.testing.assert_close(latents(pipe, kwargs), expected, rtol=0, atol=0)


def test_from_pipe_with_the_shared_scheduler():
    from diffusers import FluxPipeline

    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    sibling = FluxPipeline.from_pipe(pipe)
    assert sibling.scheduler is pipe.scheduler
    first = latents(pipe, kwargs)
    latents(sibling, kwargs, num_inference_steps=20)
    assert spectrum_summary(sibling).branches[0].num_inference_steps == 20
    torch.testing.assert_close(latents(pipe, kwargs), first, rtol=0, atol=0)


def test_consecutive_calls_that_change_the_request_match_fresh_pipelines():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    shape = latents(pipe, kwargs).shape  # output_type="latent": the packed latents
    requests = [
        {"height": 48, "width": 48},
        {"num_inference_steps": 9, "guidance_scale": 5.0},
        {"latents": torch.randn(shape, generator=torch.Generator().manual_seed(3))},
        {"sigmas": list(np.linspace(1.0, 0.1, 7))},
        {},
    ]
    for request in requests:
        fresh, _ = flux()
        enable_spectrum(fresh, REAL)
        torch.testing.assert_close(latents(pipe, kwargs, **request), latents(fresh, kwargs, **request), rtol=0, atol=0)


def test_layerwise_casting_and_bfloat16():
    pipe, kwargs = flux()
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    enable_spectrum(pipe, REAL)
    assert torch.isfinite(latents(pipe, kwargs)).all()
    assert spectrum_summary(pipe).passes_saved == STEPS - EXPECTED_PASSES
    pipe, kwargs = flux()
    pipe.to(torch.bfloat16)
    kwargs = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    enable_spectrum(pipe, REAL)
    assert torch.isfinite(latents(pipe, kwargs)).all()
    assert spectrum_summary(pipe).passes_saved == STEPS - EXPECTED_PASSES


def test_save_pretrained_while_enabled(tmp_path):
    from diffusers import FluxTransformer2DModel

    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    pipe.transformer.save_pretrained(tmp_path)
    loaded = FluxTransformer2DModel.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(pipe.transformer.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("value", [float("nan"), 3e38])
def test_nan_and_huge_latents_fail_closed(value):
    pipe, kwargs = flux()
    nan = torch.full(latents(pipe, kwargs).shape, value)
    baseline = latents(pipe, kwargs, latents=nan)
    enable_spectrum(pipe, REAL)
    with pytest.warns(SpectrumWarning, match="not recorded"):
        out = latents(pipe, kwargs, latents=nan)
    torch.testing.assert_close(out, baseline, rtol=0, atol=0, equal_nan=True)
    assert spectrum_summary(pipe).passes_saved == 0


def test_lora_add_set_fuse_unfuse_unload_keep_forecasting() -> None:
    peft = pytest.importorskip("peft")
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    passes = block_passes(pipe.transformer)
    plain = latents(pipe, kwargs)
    config = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    pipe.transformer.add_adapter(config, adapter_name="style")
    outputs = {}
    for step in ("added", "set", "fused", "unfused", "unloaded"):
        if step == "set":
            pipe.transformer.set_adapters(["style"], weights=[0.5])
        elif step == "fused":
            pipe.transformer.fuse_lora(lora_scale=1.0)
        elif step == "unfused":
            pipe.transformer.unfuse_lora()
        elif step == "unloaded":
            pipe.transformer.unload_lora()
        passes[0] = 0
        outputs[step] = latents(pipe, kwargs)
        assert passes[0] == EXPECTED_PASSES, step  # Spectrum still forecasts after every change
    assert not torch.allclose(outputs["added"], plain)  # the adapter takes part in the computed steps
    assert not torch.allclose(outputs["set"], outputs["added"])  # and its weight too
    torch.testing.assert_close(outputs["fused"], outputs["set"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outputs["unfused"], outputs["set"], rtol=1e-5, atol=1e-5)
    # Unfusing restores the weights by subtraction, so back to the plain output up to its rounding.
    torch.testing.assert_close(outputs["unloaded"], plain, rtol=1e-5, atol=1e-5)
