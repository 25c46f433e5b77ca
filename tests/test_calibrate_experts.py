"""calibrate on every trajectory a pipeline runs: Wan2.2's two experts (the low-noise one running 1, 2, 3 and
more steps), an SDXL base with denoising_end and its refiner with denoising_start, and samplers that call the
denoiser more than once per step (PNDM, Heun). Budgets are counted on a leaf module inside a block."""

from __future__ import annotations

import pytest
import torch

from families import wan22
from spectrum_cache import calibrate, enable_spectrum, spectrum_summary

pytestmark = [pytest.mark.filterwarnings("ignore:.*has hooks of its own"),  # the pass counters are such hooks
              pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")]

QUICK = dict(blend_weights=(0.5,), fits=None, progress=False)


class _LeafCount:
    """Counts calls of a leaf module inside a block: the network passes that really ran."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def _wan22(boundary_ratio: float):
    pipe, kwargs = wan22()
    pipe.register_to_config(boundary_ratio=boundary_ratio)
    kwargs.pop("num_inference_steps")
    embeds = kwargs.pop("prompt_embeds")
    prompts = [{"prompt_embeds": embeds}, {"prompt_embeds": embeds.flip(1)}]
    return pipe, kwargs, prompts


# At 8 steps (shift 3) the timesteps are 1000 948 883 801 694 548 338 9: the low-noise expert runs those below
# boundary_ratio * 1000.
@pytest.mark.parametrize("boundary_ratio,low_noise_steps,passes", [(0.3, 1, 3), (0.4, 2, 3), (0.6, 3, 4),
                                                                   (0.85, 5, 4)])
def test_calibrate_plans_both_wan22_experts_within_one_budget(boundary_ratio, low_noise_steps, passes):
    pipe, kwargs, prompts = _wan22(boundary_ratio)
    config = calibrate(pipe, prompts, passes=passes, num_inference_steps=8, **QUICK, **kwargs)
    split = {"transformer": 8 - low_noise_steps, "transformer_2": low_noise_steps}
    assert config.per_denoiser and config.denoiser_steps == split and config.num_inference_steps == 8
    schedules = config.compute_steps
    assert set(schedules) == set(split) and sum(len(s) for s in schedules.values()) == passes
    assert all(s[0] == 0 and s[-1] < split[name] for name, s in schedules.items())  # each expert's first step
    record = config.provenance
    assert record["steps_run"] == {"transformer": {"steps": split["transformer"],
                                                   "call_steps": [0, split["transformer"] - 1]},
                                   "transformer_2": {"steps": low_noise_steps, "call_steps": [split["transformer"], 7]}}
    assert all(sum(len(s) for s in c["compute_steps"].values()) == passes for c in record["candidates"])
    # The budget holds on the network itself: cond and uncond each run `passes` steps over the two experts.
    counts = {name: _LeafCount(getattr(pipe, name).blocks[0].ffn.net[0].proj) for name in split}
    enable_spectrum(pipe, config)
    pipe(**kwargs, **prompts[0], num_inference_steps=8)
    assert sum(c.calls for c in counts.values()) == 2 * passes
    assert {name: c.calls for name, c in counts.items()} == {name: 2 * len(s) for name, s in schedules.items()}
    ran = {(b.denoiser, b.computed_steps) for b in spectrum_summary(pipe).branches}
    assert ran == set(schedules.items())


def test_calibrate_refuses_passes_the_experts_cannot_share_naming_them():
    pipe, kwargs, prompts = _wan22(0.3)
    with pytest.raises(ValueError, match=r"passes must be an integer in \[2, 8\] for this pipeline call, got 1: "
                                         r"transformer runs 7 steps \(steps 0 to 6 of the call\).*transformer_2 runs 1"):
        calibrate(pipe, prompts, passes=1, num_inference_steps=8, **QUICK, **kwargs)
    assert spectrum_summary(pipe).enabled is False  # nothing left on the pipeline


def test_best_split_minimises_the_weighted_sum():
    import numpy as np

    from spectrum_cache.integrations.experts import Expert, best_split, budgets
    from spectrum_cache.planner import RecordedTrajectory, SearchResult

    def expert(name, steps, energy):
        return Expert(name, steps, None, (RecordedTrajectory(np.eye(steps)),), None, None, frozenset({0}), energy)

    experts = [expert("a", 6, 3.0), expert("b", 4, 1.0)]
    assert [list(r) for r in budgets(experts, 5)] == [[1, 2, 3, 4], [1, 2, 3, 4]]
    # a's score falls fast with passes and it weighs 3/4: it gets most of them, but not all.
    curves = [{b: SearchResult((0,), {1: 9.0, 2: 4.0, 3: 1.0, 4: 0.9}[b], 1) for b in range(1, 5)},
              {b: SearchResult((0,), {1: 3.0, 2: 1.0, 3: 0.5, 4: 0.4}[b], 1) for b in range(1, 5)}]
    score, split = best_split(experts, curves, 5)
    assert split == (3, 2) and score == pytest.approx(0.75 * 1.0 + 0.25 * 1.0)


# -- SDXL base with denoising_end, refiner with denoising_start ------------------------------------------------
def _unet_leaf(unet) -> _LeafCount:
    return _LeafCount(unet.mid_block.resnets[0].conv1)


def _base_and_refiner():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    from families import sdxl
    from families_controlnet import one_level_vae

    base, kwargs = sdxl()
    torch.manual_seed(1)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=one_level_vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=UNet2DConditionModel(**base.unet.config), requires_aesthetics_score=False,
        scheduler=EulerDiscreteScheduler.from_config(base.scheduler.config))
    kwargs.pop("num_inference_steps")
    refiner_kwargs = {k: v for k, v in kwargs.items() if k not in ("height", "width")}
    refiner_kwargs.update({k: torch.cat([kwargs[k]] * 2) for k in (
        "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")},
        num_images_per_prompt=1)
    return base, kwargs, refiner, refiner_kwargs


@pytest.mark.filterwarnings("error::spectrum_cache.integrations.SpectrumWarning")  # no step-count warning
def test_calibrate_an_sdxl_base_and_its_refiner_each_for_the_steps_it_runs():
    base, kwargs, refiner, refiner_kwargs = _base_and_refiner()
    embeds = kwargs.pop("prompt_embeds")
    # 12 steps: the base runs 0..8 (denoising_end 0.75), the refiner 9..11 of the same call's schedule.
    base_config = calibrate(base, [{"prompt_embeds": embeds}], passes=4, num_inference_steps=12, denoising_end=0.75,
                            **QUICK, **kwargs)
    assert base_config.compute_steps.keys() == {"unet"} and base_config.denoiser_steps == {"unet": 9}
    assert len(base_config.compute_steps["unet"]) == 4
    assert base_config.provenance["steps_run"] == {"unet": {"steps": 9, "call_steps": [0, 8]}}
    latents = base(**kwargs, prompt_embeds=embeds, num_inference_steps=12, denoising_end=0.75).images
    refiner_config = calibrate(refiner, [{"image": latents}], passes=2, num_inference_steps=12, denoising_start=0.75,
                               **QUICK, **refiner_kwargs)
    assert refiner_config.denoiser_steps == {"unet": 3} and refiner_config.compute_steps["unet"][0] == 0
    assert len(refiner_config.compute_steps["unet"]) == 2
    assert refiner_config.provenance["steps_run"] == {"unet": {"steps": 3, "call_steps": [9, 11]}}
    # Each pipeline call runs exactly its passes with its schedule.
    for pipe, config, call in ((base, base_config, dict(kwargs, prompt_embeds=embeds, denoising_end=0.75)),
                               (refiner, refiner_config, dict(refiner_kwargs, image=latents, denoising_start=0.75))):
        leaf = _unet_leaf(pipe.unet)
        enable_spectrum(pipe, config)
        pipe(**call, num_inference_steps=12)
        (branch,) = spectrum_summary(pipe).branches  # batched CFG: one trajectory
        assert branch.computed_steps == config.compute_steps["unet"] and leaf.calls == len(branch.computed_steps)
        # Another split of the same 12 steps is refused by name.
        other = {"denoising_end": 0.5} if "denoising_end" in call else {"denoising_start": 0.5}
        with pytest.raises(ValueError, match=r"compute_steps\['unet'\]\) was planned for its \d steps of a 12-step"):
            pipe(**{**call, **other}, num_inference_steps=12)
        from spectrum_cache import disable_spectrum

        disable_spectrum(pipe)


# -- samplers that call the denoiser more than once per step -----------------------------------------------
def _sd15(scheduler: str, **options):
    """An SD 1.5-style pipeline: UNet blocks of 16 and 32, text 24, 8x12 latents (64x96 pixels), batched CFG."""
    import diffusers
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=24, norm_num_groups=8)
    # SD 1.5's own scheduler config (scaled_linear betas, steps_offset 1), with the options under test.
    scheduler = getattr(diffusers, scheduler).from_config(dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, num_train_timesteps=1000),
        **options)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    kwargs = dict(negative_prompt_embeds=torch.randn(1, 5, 24), height=64, width=96, guidance_scale=5.0,
                  output_type="latent")
    prompts = [{"prompt_embeds": torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    return pipe, kwargs, prompts


def _runge_kutta(schedule):  # PNDM's Runge-Kutta warm-up calls its first 3 steps 4 times each
    return sum(4 if s < 3 else 1 for s in schedule)


# (scheduler, options, passes, denoiser calls on a schedule's steps): order-2 samplers call each step after the
# first twice, so their second call's trajectory starts at step 1, which must then compute; PNDM's PLMS warm-up
# calls step 1 twice.
SAMPLERS = [
    ("PNDMScheduler", {"skip_prk_steps": True}, 4, lambda s: len(s) + 1),
    ("PNDMScheduler", {"skip_prk_steps": True}, 2, lambda s: len(s) + 1),
    ("PNDMScheduler", {}, 5, _runge_kutta),
    ("HeunDiscreteScheduler", {}, 4, lambda s: 2 * len(s) - 1),
    ("HeunDiscreteScheduler", {}, 2, lambda s: 2 * len(s) - 1),
    ("KDPM2DiscreteScheduler", {}, 3, lambda s: 2 * len(s) - 1),
    ("KDPM2AncestralDiscreteScheduler", {}, 3, lambda s: 2 * len(s) - 1),
]


@pytest.mark.parametrize("scheduler,options,passes,calls", SAMPLERS)
def test_calibrate_follows_the_every_step_convention_of_each_sampler(scheduler, options, passes, calls):
    pipe, kwargs, prompts = _sd15(scheduler, **options)
    config = calibrate(pipe, prompts, passes=passes, num_inference_steps=10, **QUICK, **kwargs)
    schedule = config.compute_steps
    assert isinstance(schedule, tuple) and config.num_inference_steps == 10 and len(schedule) == passes
    if scheduler != "PNDMScheduler" or options:
        assert schedule[:2] == (0, 1)  # the second call's trajectory starts at step 1: it computes there
    leaf = _unet_leaf(pipe.unet)
    enable_spectrum(pipe, config)
    pipe(**kwargs, **prompts[0], num_inference_steps=10)
    assert leaf.calls == calls(schedule)  # batched CFG: one call per evaluation
    first = [b for b in spectrum_summary(pipe).branches if not b.branch.endswith("]")]
    assert [b.computed_steps for b in first] == [schedule] and first[0].num_inference_steps == 10


def test_calibrate_refuses_fewer_passes_than_a_sampler_must_compute():
    pipe, kwargs, prompts = _sd15("HeunDiscreteScheduler")
    with pytest.raises(ValueError, match=r"passes must be an integer in \[2, 10\] for this pipeline call, got 1: "
                                         r"unet runs 10 steps .* and computes at least 2"):
        calibrate(pipe, prompts, passes=1, num_inference_steps=10, **QUICK, **kwargs)
