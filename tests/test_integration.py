"""Behaviour of the diffusers integration beyond the per-family checks: steps, branches, fail-closed
paths, the diffusers cache contract, and state isolation."""

from __future__ import annotations

import warnings

import pytest
import torch

from families import STEPS, flux, sdxl, wan22
from helpers import block_passes, denoise_loop, flux_img2img, flux_inputs, latents, own_forward_runs
from spectrum_cache import (
    SpectrumConfig,
    SpectrumWarning,
    compute_steps,
    disable_spectrum,
    enable_spectrum,
    spectrum_summary,
)
from spectrum_cache.forecast import SpectrumForecaster
from spectrum_cache.integrations import UnsupportedModelError

REAL = SpectrumConfig(warmup_steps=3)


# -- steps come from the pipeline -----------------------------------------------------------------
@pytest.mark.parametrize("steps", [28, 20])
def test_step_count_comes_from_the_pipeline(steps):
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig())
    latents(pipe, kwargs, num_inference_steps=steps)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.num_inference_steps == steps
    assert list(branch.computed_steps) == compute_steps(SpectrumConfig(), steps)


def test_same_pipeline_with_two_step_counts():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs, num_inference_steps=28)
    latents(pipe, kwargs, num_inference_steps=10)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.num_inference_steps == 10
    assert list(branch.computed_steps) == compute_steps(REAL, 10)


def test_configured_step_count_that_disagrees_warns_and_follows_the_pipeline():
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=50))
    with pytest.warns(SpectrumWarning, match="num_inference_steps=50 but the pipeline runs 12"):
        latents(pipe, kwargs)
    assert spectrum_summary(pipe).branches[0].num_inference_steps == STEPS


def test_img2img_with_strength_schedules_the_steps_that_run():
    img2img, kwargs = flux_img2img()
    enable_spectrum(img2img, REAL)
    image = torch.rand(1, 3, 8, 8)
    kwargs = {**kwargs, "height": 8, "width": 8, "num_inference_steps": 20}
    img2img(**kwargs, image=image, strength=0.5, generator=torch.Generator().manual_seed(0))
    (branch,) = spectrum_summary(img2img).branches
    assert branch.num_inference_steps == 10  # strength 0.5 of 20 steps
    assert list(branch.computed_steps) == compute_steps(REAL, 10)


def test_heun_second_evaluations_are_not_extra_steps():
    from diffusers import HeunDiscreteScheduler

    pipe, kwargs = sdxl()
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    enable_spectrum(pipe, REAL)
    out = latents(pipe, kwargs, num_inference_steps=10)
    assert torch.isfinite(out).all()
    branches = {b.branch: b for b in spectrum_summary(pipe).branches}
    assert set(branches) == {"default", "default[1]"}
    assert branches["default"].num_inference_steps == 10
    expected = compute_steps(REAL, 10)
    assert list(branches["default"].computed_steps) == expected
    # The second evaluation of step s runs at step s+1's time; there is none for the first step.
    assert sorted(branches["default[1]"].computed_steps + branches["default[1]"].forecast_steps) == list(range(1, 10))


# -- CFG branches and experts -------------------------------------------------------------------
def test_wan22_experts_each_get_their_own_schedule_and_branches():
    pipe, kwargs = wan22()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    summary = spectrum_summary(pipe)
    by_expert = {}
    for b in summary.branches:
        by_expert.setdefault(b.denoiser, []).append(b)
    assert set(by_expert) == {"transformer", "transformer_2"}
    counts = {name: branches[0].num_inference_steps for name, branches in by_expert.items()}
    assert counts["transformer"] + counts["transformer_2"] == STEPS
    assert min(counts.values()) > 0
    for name, branches in by_expert.items():
        assert {b.branch for b in branches} == {"cond", "uncond"}
        for b in branches:
            assert list(b.computed_steps) == compute_steps(REAL, counts[name])


@torch.no_grad()
def test_separate_branches_have_separate_forecasters():
    from diffusers import FluxTransformer2DModel

    pipe, _ = flux()
    transformer: FluxTransformer2DModel = pipe.transformer
    enable_spectrum(transformer, SpectrumConfig(num_inference_steps=10, warmup_steps=3))
    cond = flux_inputs(transformer, seed=1)
    uncond = flux_inputs(transformer, seed=2)
    hook = transformer._diffusers_hook.get_hook("spectrum_cache")
    x = cond.pop("hidden_states")
    uncond.pop("hidden_states")
    for i in range(6):
        t = torch.tensor([1.0 - i / 10])
        with transformer.cache_context("cond"):
            transformer(hidden_states=x, timestep=t, **cond)
        with transformer.cache_context("uncond"):
            transformer(hidden_states=x, timestep=t, **uncond)
    branches = hook.generations.current().branches
    f_cond = branches["cond"].trajectories[0].forecaster
    f_uncond = branches["uncond"].trajectories[0].forecaster
    assert f_cond is not f_uncond
    assert f_cond.num_recorded == f_uncond.num_recorded == len([s for s in compute_steps(REAL, 10) if s < 6])
    assert not torch.allclose(f_cond.predict(7), f_uncond.predict(7))


def test_batched_branches_forecast_like_separate_ones():
    """One forecaster over a batched [uncond, cond] feature equals one per half: every feature
    element is its own regression on the same design matrix."""
    gen = torch.Generator().manual_seed(0)
    steps = [0, 1, 2, 3, 4, 6]
    feats = [torch.randn(2, 5, 3, generator=gen) for _ in steps]
    batched, halves = SpectrumForecaster(), [SpectrumForecaster(), SpectrumForecaster()]
    for s, f in zip(steps, feats):
        batched.update(s, f)
        for i in range(2):
            halves[i].update(s, f[i : i + 1])
    torch.testing.assert_close(batched.predict(9), torch.cat([h.predict(9) for h in halves]))


def test_batch_of_two_images():
    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    out = latents(pipe, kwargs, num_images_per_prompt=2)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    assert list(spectrum_summary(pipe).branches[0].computed_steps) == compute_steps(REAL, STEPS)


# -- fail closed ----------------------------------------------------------------------------------
def test_controlnet_residuals_force_every_step():
    pipe, _ = flux()
    transformer = pipe.transformer
    inputs = flux_inputs(transformer)
    residual = [torch.zeros(1, 4, 32)]  # the inner width
    baseline = denoise_loop(transformer, 10, controlnet_block_samples=residual, **dict(inputs))
    enable_spectrum(transformer, SpectrumConfig(num_inference_steps=10, warmup_steps=2))
    passes = block_passes(transformer)
    with pytest.warns(SpectrumWarning, match="controlnet_block_samples"):
        out = denoise_loop(transformer, 10, controlnet_block_samples=residual, **dict(inputs))
    assert passes[0] == 10 * 1  # every step ran the first dual block
    torch.testing.assert_close(out, baseline, rtol=0, atol=0)


def test_with_gradients_enabled_runs_normally():
    pipe, _ = flux()
    transformer = pipe.transformer
    enable_spectrum(transformer, SpectrumConfig(num_inference_steps=10, warmup_steps=1, window_size=2, flex_window=5))
    passes = block_passes(transformer)
    inputs = flux_inputs(transformer)
    x = inputs.pop("hidden_states")
    with pytest.warns(SpectrumWarning, match="gradients are enabled"):
        for i in range(10):
            transformer(hidden_states=x, timestep=torch.tensor([1.0 - i / 10]), **inputs)
    assert passes[0] == 10
    assert spectrum_summary(transformer).branches == ()


def test_non_finite_forecast_runs_the_network(monkeypatch):
    pipe, kwargs = flux()
    baseline = latents(pipe, kwargs)
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    for fit in (SpectrumForecaster, WindowedSpectrumForecaster):  # the full fit and the default window
        monkeypatch.setattr(fit, "_forecast", lambda self, step: torch.full(self.feature_shape, float("nan")))
    enable_spectrum(pipe, REAL)
    with pytest.warns(SpectrumWarning, match="non-finite forecast"):
        out = latents(pipe, kwargs)
    torch.testing.assert_close(out, baseline, rtol=0, atol=0)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.forecast_steps == ()


def test_on_an_accelerator_finiteness_is_checked_once_per_trajectory(monkeypatch):
    """Where a check would stall the host (monkeypatched here to look like an accelerator), non-finite
    features are not caught per call: they are found once, when the trajectory ends, and said."""
    from spectrum_cache.integrations import hooks

    pipe, kwargs = flux()
    monkeypatch.setattr(hooks, "checks_on_host", lambda tensor: False)
    checked = []
    real_update = SpectrumForecaster.update

    def update(self, step, feature, check_finite=None):
        checked.append(check_finite)
        return real_update(self, step, feature, check_finite)

    monkeypatch.setattr(SpectrumForecaster, "update", update)
    enable_spectrum(pipe, REAL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latents(pipe, kwargs)
    assert checked and not any(checked)
    assert not [w for w in caught if issubclass(w.category, SpectrumWarning)]
    # A feature with a NaN: recorded without a per-call check, said once at the end.
    real_forward = pipe.transformer.norm_out.forward
    monkeypatch.setattr(pipe.transformer.norm_out, "forward",
                        lambda x, *a, **k: real_forward(torch.full_like(x, float("nan")), *a, **k))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latents(pipe, kwargs)
    notes = [str(w.message) for w in caught if issubclass(w.category, SpectrumWarning)]
    assert len(notes) == 1 and "NaN or Inf features" in notes[0]


def test_model_cpu_offload():
    pipe, kwargs = flux()
    baseline = latents(pipe, kwargs)
    pipe.enable_model_cpu_offload(device="cpu")
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=STEPS))
    torch.testing.assert_close(latents(pipe, kwargs), baseline, rtol=0, atol=0)
    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    out = latents(pipe, kwargs)
    assert torch.isfinite(out).all()
    assert list(spectrum_summary(pipe).branches[0].computed_steps) == compute_steps(REAL, STEPS)


# -- the diffusers cache contract -----------------------------------------------------------------
def test_enable_twice_raises_and_diffusers_cache_refuses_to_stack():
    from diffusers.hooks import FirstBlockCacheConfig

    pipe, _ = flux()
    enable_spectrum(pipe, REAL)
    assert pipe.transformer.is_cache_enabled
    with pytest.raises(ValueError, match="Spectrum is already enabled on FluxTransformer2DModel"):
        enable_spectrum(pipe, REAL)
    with pytest.raises(ValueError, match="Caching has already been enabled"):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    disable_spectrum(pipe)
    assert not pipe.transformer.is_cache_enabled


def test_refuses_to_stack_on_a_diffusers_cache_and_leaves_nothing_behind():
    from diffusers.hooks import FirstBlockCacheConfig

    pipe, _ = wan22()
    pipe.transformer_2.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(ValueError, match="another cache, diffusers. FirstBlockCacheConfig"):
        enable_spectrum(pipe, REAL)
    for module in pipe.transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or not any(name.startswith("spectrum") for name in registry.hooks)


def test_a_failure_while_attaching_leaves_no_hook(monkeypatch):
    from spectrum_cache.integrations import skipping

    pipe, _ = wan22()

    def broken_init(self, owner, index=0):
        raise RuntimeError("boom")

    monkeypatch.setattr(skipping.HeadHook, "__init__", broken_init)
    with pytest.raises(RuntimeError, match="boom"):
        enable_spectrum(pipe, REAL)
    assert "set_timesteps" not in vars(pipe.scheduler)  # the scheduler is as it was
    for denoiser in (pipe.transformer, pipe.transformer_2):
        assert not denoiser.is_cache_enabled
        for module in denoiser.modules():
            registry = getattr(module, "_diffusers_hook", None)
            assert registry is None or not registry.hooks


def test_hooks_registered_on_denoiser_and_head_then_removed():
    pipe, _ = flux()
    t = pipe.transformer
    enable_spectrum(t, SpectrumConfig(num_inference_steps=10))
    assert t._diffusers_hook.get_hook("spectrum_cache") is not None
    assert t.norm_out._diffusers_hook.get_hook("spectrum_cache_head") is not None
    # Blocks carry no hook: forecast steps take them out of the call (compiled blocks see no Spectrum code).
    blocks = [*t.transformer_blocks, *t.single_transformer_blocks]
    assert not any(hasattr(b, "_diffusers_hook") for b in blocks)
    disable_spectrum(t)
    for module in t.modules():
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or not registry.hooks


@torch.no_grad()
def test_cache_context_isolates_branches_and_reset_clears_state():
    pipe, _ = flux()
    t = pipe.transformer
    inputs = flux_inputs(t)
    enable_spectrum(t, SpectrumConfig(num_inference_steps=10))
    with t.cache_context("context_1"):
        out1 = t(timestep=torch.tensor([1.0]), **inputs)[0]
    with t.cache_context("context_2"):
        out2 = t(timestep=torch.tensor([1.0]), **inputs)[0]
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    hook = t._diffusers_hook.get_hook("spectrum_cache")
    assert set(hook.generations.current().branches) == {"context_1", "context_2"}
    t._reset_stateful_cache()
    assert hook.generations.current() is None


def test_bare_denoiser_needs_a_step_count_and_is_pointed_at_the_pipeline():
    pipe, _ = flux()
    with pytest.raises(ValueError, match=r"num_inference_steps is required for a bare denoiser without a scheduler "
                       r"\(FluxTransformer2DModel\): enable Spectrum on the pipeline instead, enable_spectrum\(pipe\)"):
        enable_spectrum(pipe.transformer, SpectrumConfig())
    assert not hasattr(pipe.transformer, "_diffusers_hook") or not pipe.transformer._diffusers_hook.hooks


def test_bare_denoiser_loop_follows_the_schedule_and_restarts():
    pipe, _ = flux()
    t = pipe.transformer
    config = SpectrumConfig(num_inference_steps=10, warmup_steps=3)
    enable_spectrum(t, config)
    passes = block_passes(t)
    first = denoise_loop(t, 10, **flux_inputs(t))
    second = denoise_loop(t, 10, **flux_inputs(t))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert passes[0] == 2 * len(compute_steps(config))


@torch.no_grad()
def test_bare_denoiser_with_rising_timesteps_and_an_aborted_generation():
    pipe, _ = flux()
    t = pipe.transformer
    config = SpectrumConfig(num_inference_steps=10, warmup_steps=3)
    enable_spectrum(t, config)
    inputs = flux_inputs(t)
    x = inputs.pop("hidden_states")
    for i in range(6):  # aborted after 6 of 10 steps
        t(hidden_states=x, timestep=torch.tensor([i / 10]), **inputs)
    for i in range(10):  # timesteps rise, as in Lumina2
        t(hidden_states=x, timestep=torch.tensor([i / 10]), **inputs)
    (branch,) = spectrum_summary(t).branches
    assert list(branch.computed_steps) == compute_steps(config)
    assert len(branch.computed_steps) + len(branch.forecast_steps) == 10


@torch.no_grad()
def test_new_resolution_starts_a_new_trajectory():
    pipe, _ = flux()
    t = pipe.transformer
    enable_spectrum(t, SpectrumConfig(num_inference_steps=10, warmup_steps=2))
    small = flux_inputs(t, tokens=4)
    x = small.pop("hidden_states")
    for i in range(4):
        t(hidden_states=x, timestep=torch.tensor([1.0 - i / 10]), **small)
    big = flux_inputs(t, tokens=16)
    big["img_ids"] = torch.zeros(16, 3)
    passes = block_passes(t)
    y = big.pop("hidden_states")
    out = t(hidden_states=y, timestep=torch.tensor([0.6]), **big)[0]  # step 4 would be a forecast
    assert out.shape == (1, 16, 16) and passes[0] == 1


@torch.no_grad()
def test_unsupported_model_names_its_class_and_output_fallback_works():
    class TinyDenoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 4)

        def forward(self, hidden_states, timestep):
            return (self.net(hidden_states) * timestep,)

    model = TinyDenoiser()
    with pytest.raises(UnsupportedModelError, match="TinyDenoiser"):
        enable_spectrum(model, SpectrumConfig(num_inference_steps=10))
    enable_spectrum(model, SpectrumConfig(num_inference_steps=10, warmup_steps=3, forecast_output=True))
    calls = [0]
    model.net.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    x = torch.randn(2, 4)
    outs = [model(x, torch.tensor(1.0 - i / 10))[0] for i in range(10)]
    assert calls[0] == len(compute_steps(SpectrumConfig(warmup_steps=3), 10))
    assert all(o.shape == (2, 4) and torch.isfinite(o).all() for o in outs)


def test_two_pipelines_never_share_state():
    pipe_a, kwargs = flux()
    pipe_b, _ = flux()
    alone = latents(pipe_a, kwargs)
    enable_spectrum(pipe_a, REAL)
    enable_spectrum(pipe_b, SpectrumConfig(warmup_steps=STEPS))
    a1 = latents(pipe_a, kwargs)
    latents(pipe_b, kwargs, num_inference_steps=8)  # in between, on the same transformer
    a2 = latents(pipe_a, kwargs)
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    assert spectrum_summary(pipe_b).branches[0].num_inference_steps == 8
    assert spectrum_summary(pipe_a).branches[0].num_inference_steps == STEPS
    assert not torch.equal(a1, alone)


def test_summary_prints_per_branch():
    pipe, kwargs = wan22()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    text = str(spectrum_summary(pipe))
    for word in ("transformer_2", "cond", "uncond", "computed", "forecast", "ideal speedup", "peak held"):
        assert word in text
    summary = spectrum_summary(pipe)
    assert summary.passes_saved == sum(len(b.forecast_steps) for b in summary.branches) > 0


def test_summary_before_enable_raises():
    pipe, _ = flux()
    with pytest.raises(ValueError, match="Spectrum is not enabled on FluxPipeline"):
        spectrum_summary(pipe)


def test_history_caps_the_forecaster_memory():
    pipe, kwargs = flux()
    held = {}
    for history in (None, 5):
        enable_spectrum(pipe, REAL.replace(history=history))
        latents(pipe, kwargs)
        (branch,) = spectrum_summary(pipe).branches
        held[history] = branch.peak_bytes
        disable_spectrum(pipe)
    # FLUX's head input here: 2 images x 6 tokens (32 x 48 pixels, VAE factor 8, 2 x 2 patches) x 32 channels
    # (the inner width), float32.
    numel = 2 * 6 * 32
    assert held[5] == 5 * 4 * numel
    assert held[None] == (5 * 4 + 2 * 4) * numel + 25 * 8  # moments, two features, the float64 Gram matrix


@pytest.mark.parametrize("history", [None, 5])
@pytest.mark.parametrize("mode", ["independent", "paired"])
def test_state_in_host_memory_gives_the_same_latents(mode, history, monkeypatch):
    """state_device="cpu" on a CPU model: the host-memory path (the full fit's moments and last features, or
    the window, in host slices: a 100-element slice splits Wan's 2 x 2 x 6 x 32 feature unevenly) gives the
    on-device state's latents bitwise, with both CFG branches of Wan2.2 (paired: the difference is taken
    against the primary's host copy)."""
    from spectrum_cache.forecast import chebyshev

    monkeypatch.setattr(chebyshev, "_CHUNK", 100)
    pipe, kwargs = wan22()
    out, held = {}, {}
    for device in (None, "cpu"):
        enable_spectrum(pipe, REAL.replace(history=history, state_device=device, guidance_forecast=mode))
        out[device] = latents(pipe, kwargs)
        summary = spectrum_summary(pipe)
        assert summary.passes_saved > 0
        held[device] = [b.peak_bytes for b in summary.branches]
        disable_spectrum(pipe)
    torch.testing.assert_close(out["cpu"], out[None], rtol=0, atol=0)
    assert held["cpu"] == held[None]


@pytest.mark.parametrize("history", [None, 5])
def test_wan_holds_its_upcast_head_input_in_bfloat16_losslessly(history, monkeypatch):
    """Wan's forward upcasts its blocks' bfloat16 output to float32 for the head; the forecaster holds those
    features in bfloat16 (24 bytes per element for the full fit, not 28), and the latents are bitwise those
    of holding them in float32 (the adapter's head_input_upcast switched off)."""
    import dataclasses

    from families import wan21

    from spectrum_cache.integrations import adapters

    pipe, kwargs = wan21()
    pipe.transformer.to(torch.bfloat16)
    kwargs = {**kwargs, "prompt_embeds": kwargs["prompt_embeds"].bfloat16(),
              "negative_prompt_embeds": kwargs["negative_prompt_embeds"].bfloat16()}
    out, held = {}, {}
    for upcast in (True, False):
        entry = adapters.ADAPTERS["WanTransformer3DModel"]
        monkeypatch.setitem(adapters.ADAPTERS, "WanTransformer3DModel",
                            dataclasses.replace(entry, head_input_upcast=upcast))
        enable_spectrum(pipe, REAL.replace(history=history))
        out[upcast] = latents(pipe, kwargs)
        summary = spectrum_summary(pipe)
        assert summary.passes_saved > 0 and len(summary.branches) == 2
        held[upcast] = [b.peak_bytes for b in summary.branches]
        disable_spectrum(pipe)
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=0)
    numel = 2 * 2 * 6 * 32  # 2 videos x 2 latent frames x 2 x 3 tokens x 32 channels
    if history is None:  # float32 moments, two bfloat16 features, the float64 Gram matrix
        assert held[True] == [(5 * 4 + 2 * 2) * numel + 25 * 8] * 2
        assert held[False] == [(5 * 4 + 2 * 4) * numel + 25 * 8] * 2
    else:
        assert held[True] == [5 * 2 * numel] * 2 and held[False] == [5 * 4 * numel] * 2


def _stand_in_hooked(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` that Spectrum gave a stand-in."""
    return [m for m in model.modules()
            if (registry := getattr(m, "_diffusers_hook", None)) is not None and "spectrum_cache_stand_in" in registry.hooks]


def test_forecast_steps_run_the_embedders_and_flux_has_no_stand_in(poisoned_blanks):
    """Only blocks are skipped: on every call, forecast steps included, FLUX's patch, text and rotary embeddings
    and its pooled-text projection run their own forward. Its blocks are all in lists, so it has no stand-in at
    all: no module gets the stand-in hook, no blank is made, nothing is held between steps."""
    pipe, kwargs = flux()
    transformer = pipe.transformer
    modules = {"x_embedder": transformer.x_embedder, "context_embedder": transformer.context_embedder,
               "pos_embed": transformer.pos_embed, "pooled": transformer.time_text_embed.text_embedder}
    with own_forward_runs(modules) as counts:
        enable_spectrum(pipe, REAL)
        latents(pipe, kwargs)
    (branch,) = spectrum_summary(pipe).branches
    assert len(branch.forecast_steps) > 0
    assert {name: count[0] for name, count in counts.items()} == dict.fromkeys(modules, STEPS)  # one call per step
    assert _stand_in_hooked(transformer) == []
    assert poisoned_blanks[0] == 0 and branch.stand_in_bytes == 0


def test_a_unets_mid_block_is_the_only_stand_in(poisoned_blanks):
    """SDXL's UNet: its mid block, a single block between the down and up lists, is the one module with a stand-in;
    its own forward runs on compute steps only, and each forecast call makes one blank (poisoned with NaN) of its
    output, which reaches nothing: the latents are finite. The input convolution and the time and added-condition
    embeddings run on every call."""
    pipe, kwargs = sdxl()
    unet = pipe.unet
    modules = {"conv_in": unet.conv_in, "time_embedding": unet.time_embedding, "add_embedding": unet.add_embedding,
               "mid_block": unet.mid_block}
    with own_forward_runs(modules) as counts:
        enable_spectrum(pipe, REAL)
        out = latents(pipe, kwargs)
    (branch,) = spectrum_summary(pipe).branches  # batched CFG: one call per step
    assert _stand_in_hooked(unet) == [unet.mid_block]
    assert len(branch.forecast_steps) > 0 and torch.isfinite(out).all()
    assert counts["mid_block"][0] == len(branch.computed_steps)
    assert all(counts[name][0] == STEPS for name in ("conv_in", "time_embedding", "add_embedding"))
    assert poisoned_blanks[0] == len(branch.forecast_steps) and branch.stand_in_bytes == 0


@torch.no_grad()
def _loop_changing_pooled(transformer, n, inputs, change):
    """denoise_loop whose pooled_projections change at step n // 2: in place, as a new tensor, or not at all."""
    x, pooled = inputs["hidden_states"], inputs["pooled_projections"].clone()
    rest = {k: v for k, v in inputs.items() if k not in ("hidden_states", "pooled_projections")}
    for i in range(n):
        if i == n // 2:
            if change == "in place":
                pooled.mul_(-2.0)
            elif change == "new tensor":
                pooled = pooled * -2.0
        v = transformer(hidden_states=x, timestep=torch.tensor([1.0 - i / n]), pooled_projections=pooled, **rest)[0]
        x = x - v / n
    return x


def test_a_change_of_the_pooled_text_on_a_forecast_step_reaches_its_output():
    """The pooled-text projection runs on every call, as the model wrote it: a change of pooled_projections on a
    forecast step (in place, or as a new tensor) reaches that step's output through the time embedding that
    conditions the head, and both ways give the same latents."""
    pipe, _ = flux()
    transformer = pipe.transformer
    inputs = flux_inputs(transformer)
    config = SpectrumConfig(num_inference_steps=12, warmup_steps=2, window_size=2, flex_window=5)
    calls = [0]
    transformer.time_text_embed.text_embedder.linear_1.register_forward_hook(
        lambda *a: calls.__setitem__(0, calls[0] + 1))
    out = {}
    for change in ("in place", "new tensor", "none"):
        enable_spectrum(transformer, config)
        out[change] = _loop_changing_pooled(transformer, 12, inputs, change)
        (branch,) = spectrum_summary(transformer).branches
        disable_spectrum(transformer)
        assert 6 in branch.forecast_steps  # the change lands on a forecast step
    assert calls[0] == 3 * 12
    torch.testing.assert_close(out["in place"], out["new tensor"], rtol=0, atol=0)
    assert not torch.equal(out["in place"], out["none"])
