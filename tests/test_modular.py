"""diffusers' modular pipelines as first-class step sources: their scheduler, their guider's CFG
decision and branch names (``pred_cond`` / ``pred_uncond``), Wan2.2's expert split, and several
modular pipelines around one transformer (issue 21, item 3)."""

from __future__ import annotations

import warnings

import pytest
import torch

from families import STEPS, _wan_transformer, flux
from spectrum_cache import SpectrumConfig, SpectrumWarning, compute_steps, enable_spectrum, spectrum_summary

pytest.importorskip("diffusers.modular_pipelines")
REAL = SpectrumConfig(warmup_steps=3, flex_window=0.75)


def _modular(blocks_class: str, drop: tuple[str, ...], **components):
    import diffusers.modular_pipelines as modular

    blocks = getattr(modular, blocks_class)()
    for name in drop:
        blocks.sub_blocks.pop(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "guiders are experimental", "not created using ComponentSpec"
        pipe = blocks.init_pipeline()
        pipe.update_components(**components)
    return pipe


def wan_modular(experts: int = 1, guidance_scale: float = 5.0):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.guiders import ClassifierFreeGuidance

    components = dict(transformer=_wan_transformer(0), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                      guider=ClassifierFreeGuidance(guidance_scale=guidance_scale))
    if experts == 2:
        components.update(transformer_2=_wan_transformer(1), guider_2=ClassifierFreeGuidance(guidance_scale=4.0))
    pipe = _modular("WanBlocks" if experts == 1 else "Wan22Blocks", ("text_encoder", "decode"), **components)
    if experts == 2:
        pipe.register_to_config(boundary_ratio=0.6)
    t = pipe.transformer
    gen = torch.Generator().manual_seed(0)
    kwargs = dict(prompt_embeds=torch.randn(1, 6, t.config.text_dim, generator=gen),
                  negative_prompt_embeds=torch.randn(1, 6, t.config.text_dim, generator=gen),
                  latents=torch.randn(1, t.config.in_channels, 2, 4, 6, generator=gen),
                  num_inference_steps=STEPS, output="latents")
    return pipe, kwargs


def flux_modular(transformer):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return _modular("FluxAutoBlocks", ("text_encoder", "vae_encoder", "decode"), transformer=transformer,
                    scheduler=FlowMatchEulerDiscreteScheduler())


def run(pipe, kwargs, **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        return pipe(**{**kwargs, **overrides})


def by_branch(pipe) -> dict[tuple[str, str], object]:
    return {(b.denoiser, b.branch): b for b in spectrum_summary(pipe).branches}


def test_wan_modular_paired_mode_pairs_the_guiders_branches():
    pipe, kwargs = wan_modular()
    enable_spectrum(pipe, REAL.replace(guidance_forecast="paired"))
    paired = run(pipe, kwargs)
    branches = by_branch(pipe)
    assert set(branches) == {("transformer", "cond"), ("transformer", "uncond")}
    expected = tuple(compute_steps(REAL, STEPS))
    assert all(b.computed_steps == expected for b in branches.values())
    # The uncond branch holds only the difference from cond, not a forecaster of its own.
    assert branches["transformer", "uncond"].peak_bytes < branches["transformer", "cond"].peak_bytes
    from spectrum_cache import disable_spectrum

    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    independent = run(pipe, kwargs)
    branches = by_branch(pipe)
    assert branches["transformer", "uncond"].peak_bytes == branches["transformer", "cond"].peak_bytes
    assert not torch.allclose(paired, independent)


def test_wan_modular_without_cfg_runs_one_branch():
    pipe, kwargs = wan_modular(guidance_scale=1.0)
    enable_spectrum(pipe, REAL.replace(guidance_forecast="paired"))
    run(pipe, kwargs)
    assert set(by_branch(pipe)) == {("transformer", "cond")}


def test_wan22_modular_experts_get_their_step_ranges():
    pipe, kwargs = wan_modular(experts=2)
    enable_spectrum(pipe, REAL)
    run(pipe, kwargs)
    branches = by_branch(pipe)
    assert set(branches) == {(e, b) for e in ("transformer", "transformer_2") for b in ("cond", "uncond")}
    high, low = branches["transformer", "cond"], branches["transformer_2", "cond"]
    assert high.num_inference_steps + low.num_inference_steps == STEPS
    assert 0 < low.num_inference_steps < STEPS
    for b in branches.values():
        assert list(b.computed_steps) == compute_steps(REAL, b.num_inference_steps)


def test_two_modular_pipelines_on_one_transformer_each_follow_their_own_scheduler():
    classic, call = flux()
    first, second = flux_modular(classic.transformer), flux_modular(classic.transformer)
    kwargs = dict(prompt_embeds=call["prompt_embeds"], pooled_prompt_embeds=call["pooled_prompt_embeds"],
                  height=32, width=48, output="latents")
    enable_spectrum(first, REAL)  # the second pipeline was never enabled; it shares the transformer
    run(first, kwargs, num_inference_steps=STEPS)
    run(second, kwargs, num_inference_steps=20)
    (mine,) = spectrum_summary(second).branches
    assert mine.num_inference_steps == 20 and list(mine.computed_steps) == compute_steps(REAL, 20)
    (theirs,) = spectrum_summary(first).branches
    assert theirs.num_inference_steps == STEPS and list(theirs.computed_steps) == compute_steps(REAL, STEPS)
