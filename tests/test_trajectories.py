"""Every way users run a generation: torch.export of an enabled model, runs that end early,
failed calls, sliced block lists, video-to-video strength. One section per way."""

from __future__ import annotations

import pytest
import torch

from families import FAMILIES, STEPS, flux, sdxl
from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum, spectrum_summary
from helpers import latents

REAL = SpectrumConfig(warmup_steps=3)


# -- 6: torch.export of an enabled model is refused naming disable_spectrum ---------------------
def _export_inputs(name: str) -> dict:
    if name == "flux":
        return dict(hidden_states=torch.randn(1, 6, 16), encoder_hidden_states=torch.randn(1, 6, 24),
                    pooled_projections=torch.randn(1, 20), timestep=torch.tensor([0.5]),
                    img_ids=torch.zeros(6, 3), txt_ids=torch.zeros(6, 3))
    return dict(sample=torch.randn(1, 4, 8, 12), timestep=torch.tensor(500), encoder_hidden_states=torch.randn(1, 5, 24),
                added_cond_kwargs=dict(text_embeds=torch.randn(1, 20), time_ids=torch.randn(1, 6)))


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("name", ["flux", "sdxl"])
def test_export_of_an_enabled_model_is_refused_naming_disable_spectrum(name, strict, fresh_dynamo):
    pipe, kwargs = {"flux": flux, "sdxl": sdxl}[name]()
    model = pipe.transformer if name == "flux" else pipe.unet
    enable_spectrum(pipe, REAL)
    with pytest.raises(Exception, match=r"Spectrum enabled is not supported.*disable_spectrum"):
        torch.export.export(model, (), _export_inputs(name), strict=strict)
    # The refusal leaves no generation behind: the next run is a normal Spectrum run.
    out = latents(pipe, kwargs)
    assert spectrum_summary(pipe).passes_saved > 0
    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    torch.testing.assert_close(latents(pipe, kwargs), out, rtol=0, atol=0)
    # What the message says to do works.
    disable_spectrum(pipe)
    if not strict:  # strict export of these tiny models is slow on CPU; non-strict proves the model exports
        exported = torch.export.export(model, (), _export_inputs(name), strict=False)
        assert exported.graph_module is not None


# -- 2: a run that ends early leaves nothing open for the next pipeline on the same denoiser -----
def _own_scheduler(pipe):
    return type(pipe.scheduler).from_config(pipe.scheduler.config)


def _sdxl_sibling(pipe, kwargs):
    """An img2img pipeline on the base's UNet with a scheduler of its own (as from_pipe users build a
    refiner stage), fed latents (4 channels) as its image."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from families_controlnet import one_level_vae

    sibling = StableDiffusionXLImg2ImgPipeline(**{**pipe.components, "vae": one_level_vae(), "scheduler": _own_scheduler(pipe)})
    sibling_kwargs = {k: v for k, v in kwargs.items() if k not in ("height", "width")}
    batch = {k: torch.randn(2, *kwargs[k].shape[1:]) for k in
             ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")}
    sibling_kwargs.update(batch, num_images_per_prompt=1, image=torch.randn(2, 4, 8, 12), strength=0.6)
    return sibling, sibling_kwargs


def _interrupt_at(step):
    def callback(pipe, i, t, callback_kwargs):
        if i == step:
            pipe._interrupt = True
        return callback_kwargs
    return callback


def _raise_at(step):
    def callback(pipe, i, t, callback_kwargs):
        if i == step:
            raise RuntimeError("stopped by the user's callback")
        return callback_kwargs
    return callback


def _flux_sibling(pipe, kwargs):
    from diffusers import FluxImg2ImgPipeline

    from families_controlnet import one_level_vae

    sibling = FluxImg2ImgPipeline(
        scheduler=_own_scheduler(pipe), vae=one_level_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, transformer=pipe.transformer)
    return sibling, {**kwargs, "height": 8, "width": 8, "image": torch.rand(1, 3, 8, 8), "strength": 0.6}


def _sdxl_refiner(pipe, kwargs):
    sibling, sibling_kwargs = _sdxl_sibling(pipe, kwargs)
    sibling_kwargs.pop("strength")
    return sibling, {**sibling_kwargs, "denoising_start": 0.7}


EARLY_ENDS = {
    "sdxl-interrupted-then-img2img": (sdxl, _sdxl_sibling, dict(callback_on_step_end=_interrupt_at(4))),
    "sdxl-denoising-end-then-refiner": (sdxl, _sdxl_refiner, dict(denoising_end=0.7)),
    "flux-raised-then-img2img": (flux, _flux_sibling, dict(callback_on_step_end=_raise_at(7))),
}


@pytest.mark.parametrize("case", list(EARLY_ENDS))
def test_a_run_that_ended_early_leaves_the_next_pipeline_its_own_generation(case):
    build, make_sibling, early = EARLY_ENDS[case]
    pipe, kwargs = build()
    sibling, sibling_kwargs = make_sibling(pipe, kwargs)
    enable_spectrum(pipe, REAL)
    enable_spectrum(sibling, REAL)  # a sibling with a scheduler of its own is placed once it is enabled too
    alone = latents(sibling, sibling_kwargs)
    expected = [(b.branch, b.num_inference_steps, b.computed_steps) for b in spectrum_summary(sibling).branches]
    try:
        latents(pipe, kwargs, **early)
    except RuntimeError as error:
        assert "stopped by the user's callback" in str(error)
    torch.testing.assert_close(latents(sibling, sibling_kwargs), alone, rtol=0, atol=0)
    assert [(b.branch, b.num_inference_steps, b.computed_steps) for b in spectrum_summary(sibling).branches] == expected
    # The base pipeline itself starts over too.
    first = latents(pipe, kwargs)
    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    torch.testing.assert_close(latents(pipe, kwargs), first, rtol=0, atol=0)


# -- 3: a call that raised frees the forecaster's state ------------------------------------------
def _held_bytes(generation) -> int:
    return sum(t.forecaster.nbytes for b in generation.branches.values()
               for t in [*b.trajectories.values(), *(t for _, t in b.retired)])


@pytest.mark.parametrize("where", ["block", "head"], ids=["compute-step", "forecast-step"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("name", ["flux", "sdxl"])
def test_a_call_that_raised_frees_the_forecasters_tensors(name, error, where):
    """The 6th call raises: in a block (a compute step, 9) or in the output head (a forecast step, 8;
    forecast steps run the head only). Then nothing is held, and the next run is a normal one."""
    pipe, kwargs = {"flux": flux, "sdxl": sdxl}[name]()
    model = pipe.transformer if name == "flux" else pipe.unet
    enable_spectrum(pipe, REAL)
    reference = latents(pipe, kwargs)
    hook = model._diffusers_hook.get_hook("spectrum_cache")
    if where == "block":
        blocks = model.transformer_blocks[0] if name == "flux" else model.down_blocks[1]
        leaf = next(m for m in blocks.modules() if isinstance(m, torch.nn.Linear))
        fail_on = 6  # the compute steps are 0, 1, 2, 4, 6, 9: the block's 6th call is step 9
    else:
        leaf = model.proj_out if name == "flux" else model.conv_out
        fail_on = 9  # the head runs every step: its 9th call is step 8, a forecast step
    calls, seen = [0], []

    def fail(module, inputs, output):
        calls[0] += 1
        if calls[0] == fail_on:
            seen.append(hook.generations.current())
            assert _held_bytes(seen[0]) > 0
            raise error("out of memory")

    handle = leaf.register_forward_hook(fail)
    with pytest.raises(error):
        latents(pipe, kwargs)
    handle.remove()
    assert max(b.step for b in seen[0].branches.values()) == (9 if where == "block" else 8)
    assert _held_bytes(seen[0]) == 0
    assert hook.generations.current() is None
    torch.testing.assert_close(latents(pipe, kwargs), reference, rtol=0, atol=0)


# -- 4: a forward that slices its block list skips the slices on forecast steps -------------------
def test_motif_videos_sliced_block_lists_run_on_compute_steps_only():
    """Motif Video runs ``single_transformer_blocks[: n - k]`` (encoder) then ``[-k:]`` (decoder): both
    slices skip on forecast steps. The counters sit on a leaf inside each block (a hook on the block
    itself would also fire for a stand-in)."""
    from diffusers import MotifVideoTransformer3DModel

    from denoisers import Denoiser, denoise, motif_video

    torch.manual_seed(0)
    model = MotifVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=3,
        num_decoder_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=24, rope_axes_dim=(4, 6, 6))
    _, inputs = motif_video()
    entry = Denoiser("MotifVideoTransformer3DModel", motif_video)
    counts = [0] * len(model.single_transformer_blocks)
    for i, block in enumerate(model.single_transformer_blocks):
        leaf = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
        leaf.register_forward_hook(lambda *a, i=i: counts.__setitem__(i, counts[i] + 1))
    config = SpectrumConfig(num_inference_steps=STEPS, warmup_steps=3)
    enable_spectrum(model, config)
    try:
        out = denoise(entry, model, inputs)
        assert torch.isfinite(out).all()
        (branch,) = spectrum_summary(model).branches
        assert branch.forecast_steps
        assert counts == [len(branch.computed_steps)] * len(counts)  # the encoder's two blocks and the decoder's
    finally:
        disable_spectrum(model)


def test_every_view_of_a_gated_block_list_shares_its_gate():
    from spectrum_cache.integrations.skipping import SkipGate, gate_block_list, ungate_block_list

    blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
    gate = SkipGate()
    gate_block_list(blocks, gate)
    gate.close()
    assert gate.skips()
    assert list(blocks) == [] and list(blocks[:2]) == [] and list(blocks[-1:]) == [] and list(reversed(blocks)) == []
    assert list(blocks[::2][1:]) == []  # a view of a view
    assert len(blocks) == 3 and blocks[1] is blocks._modules["1"]  # indexing and len are the real list's
    gate.open()
    assert list(blocks[:2]) == [blocks[0], blocks[1]] and list(reversed(blocks)) == [blocks[2], blocks[1], blocks[0]]
    ungate_block_list(blocks)
    assert type(blocks) is torch.nn.ModuleList


# -- 1: video-to-video strength is planned on the steps that run -----------------------------------
def _wan_v2v():
    from diffusers import WanVideoToVideoPipeline

    from families import wan21
    from families_new import _wan_vae

    pipe, kwargs = wan21()
    v2v = WanVideoToVideoPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=pipe.scheduler,
                                  transformer=pipe.transformer)
    kwargs = {k: v for k, v in kwargs.items() if k != "num_frames"}
    return v2v, dict(kwargs, num_videos_per_prompt=1, video=torch.rand(1, 5, 3, 32, 48) * 2 - 1)


def _cogvideox_v2v():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXVideoToVideoPipeline

    import families  # noqa: F401 - families_video imports it first
    from families_video import cogvideox

    pipe, kwargs = cogvideox()
    torch.manual_seed(3)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    v2v = CogVideoXVideoToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=pipe.scheduler,
                                        transformer=pipe.transformer)
    kwargs = {k: v for k, v in kwargs.items() if k != "num_frames"}
    return v2v, dict(kwargs, num_videos_per_prompt=1, video=torch.rand(1, 5, 3, 16, 24) * 2 - 1)


@pytest.mark.parametrize("build", [_wan_v2v, _cogvideox_v2v], ids=["wan", "cogvideox"])
def test_video_to_video_strength_is_planned_on_the_steps_that_run(build):
    """12 steps at strength 0.75 run 9: N is 9 and the computed steps are the plan for 9 (before: N = 12 and
    steps [0, 4, 6, 8, 11] for Wan, [3, 4, 6, 8, 11] for CogVideoX). These pipelines slice the timesteps
    without set_begin_index; SDXL's and FLUX's img2img, which call it, were right already."""
    from spectrum_cache import compute_steps

    pipe, kwargs = build()
    kwargs = dict(kwargs, num_inference_steps=12, strength=0.75)
    ran = []

    def count(p, i, t, callback_kwargs):
        ran.append(i)
        return callback_kwargs

    def run(**extra):
        out = pipe(**kwargs, **extra, generator=torch.Generator().manual_seed(0))
        return out.frames

    plain = run()
    config = SpectrumConfig()
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=12))  # the every-step schedule is the plain run
    torch.testing.assert_close(run(), plain, rtol=0, atol=0)
    disable_spectrum(pipe)
    enable_spectrum(pipe, config)
    run(callback_on_step_end=count)
    assert len(ran) == 9
    branches = spectrum_summary(pipe).branches
    assert branches and all(b.num_inference_steps == 9 for b in branches)
    assert all(list(b.computed_steps) == compute_steps(config, 9) for b in branches)
    disable_spectrum(pipe)


def test_the_loops_first_index_is_read_only_where_the_scheduler_does_not_say():
    """A pipeline that slices its timesteps says how many it runs in ``num_timesteps`` (set before its loop):
    the loop is their tail. The scheduler's own begin_index wins; a pipeline that says nothing starts at 0."""
    from types import SimpleNamespace

    from diffusers import FlowMatchEulerDiscreteScheduler

    from spectrum_cache.integrations.steps import loop_begin

    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(12)
    assert loop_begin(SimpleNamespace(num_timesteps=9), scheduler) == 3
    assert loop_begin(SimpleNamespace(num_timesteps=12), scheduler) is None  # the whole schedule: from 0
    assert loop_begin(SimpleNamespace(num_timesteps=13), scheduler) is None
    assert loop_begin(SimpleNamespace(num_timesteps=True), scheduler) is None
    assert loop_begin(SimpleNamespace(), scheduler) is None  # nothing said

    class Unset:
        @property
        def num_timesteps(self):
            return self._num_timesteps  # as diffusers' property reads it, before any call set it

    assert loop_begin(Unset(), scheduler) is None
    scheduler.set_begin_index(5)
    assert loop_begin(SimpleNamespace(num_timesteps=9), scheduler) is None  # the scheduler's own word wins


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_generation_ends_with_its_pipeline_call(name):
    """On every family, with or without diffusers' CacheMixin on the denoiser: after a pipeline call returns, no
    generation is live and no forecaster tensor is held; two calls give a summary of the last call alone (no
    "(run 2)"), and disable_spectrum hands back the model without the end-of-call method it was given."""
    from spectrum_cache.integrations.compat import END_OF_CALL_ATTR

    family = FAMILIES[name]
    pipe, kwargs = family.build()
    models = [getattr(pipe, component) for component in family.denoisers]
    enable_spectrum(pipe, REAL)
    hooks = [model._diffusers_hook.get_hook("spectrum_cache") for model in models]
    latents(pipe, kwargs)
    first = str(spectrum_summary(pipe))
    latents(pipe, kwargs)
    # StableAudioPipeline returns latents before its maybe_free_model_hooks(), diffusers' end-of-call signal: its
    # generation ends when the next call starts, as before (docs/how-it-works.md).
    assert all(hook.generations.current() is None for hook in hooks) != (name == "stable-audio"), name
    assert (str(spectrum_summary(pipe)) == first) != (name == "stable-audio")
    assert ("(run 2)" in first) == (name == "helios")  # Helios denoises chunk after chunk within one call
    disable_spectrum(pipe)
    assert not any(END_OF_CALL_ATTR in model.__dict__ for model in models)


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_a_deleted_pipeline_is_freed_while_its_denoiser_lives(name):
    """The denoiser's hook keeps no strong reference to the pipeline of a finished call."""
    import gc
    import weakref

    family = FAMILIES[name]
    pipe, kwargs = family.build()
    enable_spectrum(pipe, REAL)
    model = getattr(pipe, family.denoisers[0])
    latents(pipe, kwargs)
    ref = weakref.ref(pipe)
    del pipe
    gc.collect()
    assert ref() is None and model is not None
