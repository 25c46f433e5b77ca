"""Tiny diffusers modular pipelines, built offline from the same tiny components as the classic families.

diffusers 0.42.1 ships modular pipelines (``diffusers.modular_pipelines``) for fifteen of the families in
families.py / families_new.py: FLUX.1, FLUX.2 [dev], FLUX.2 [klein] base, Qwen-Image, Qwen-Image 2.1, SD3, SDXL,
Wan2.1, Wan2.2, LTX-Video, LTX-2, Z-Image, Krea 2, HunyuanVideo 1.5 and Helios. Each of those builders builds
the classic family (same seed, same weights), takes the family's modular blocks without their text-encoder and
decode steps (the run starts from prompt embeddings and stops at the latents), and hands the blocks the classic
pipeline's denoiser(s), scheduler, VAE(s) (FLUX.2, LTX-2) and guider (HunyuanVideo 1.5). LTX-2's blocks take
the text connectors' outputs, which the classic pipeline computes in its call: its classic connectors run
first; both pipelines run plain CFG on both streams (no spatio-temporal guidance or modality isolation).

Families with modular blocks and no classic pipeline (FLUX.3 and its distilled variant, ERNIE-Image, MiniMax H3,
Cosmos 3 Omni, whose classic pipeline tokenizes the prompt itself, Anima, MiniMax Music 3) are built from the tiny
denoiser of tests/denoisers.py and the scheduler(s), tiny VAEs (MiniMax H3), tiny text conditioner (Anima) and
tiny condition encoder (MiniMax Music 3) the blocks take (``ModularFamily.parts``); LTX-2.5, whose blocks are
LTX-2's but for the decoder, from the classic LTX-2 family's components (run as the modular LTX-2). Ideogram 4
runs CFG through a second denoiser (``unconditional_transformer``) on every step, with no guider and no way to
turn it off (one mode, ``"cfg"``): its layout is not what the generic checks express (cond / uncond per
denoiser), so it is in ``DEDICATED``, out of ``CASES``, and tests/test_modular.py checks it itself;
``no_classic_reason`` says why a family cannot be compared with a classic pipeline (no twin, or a diffusers
difference between the two: Helios).

Guidance modes: ``"cfg"`` runs true classifier-free guidance through the pipeline's guider
(``ClassifierFreeGuidance`` at the classic scale, negative embeddings passed); ``"none"`` disables the
guider (one branch, no negative embeddings) and the classic run gets the scale that turns CFG off. FLUX.1,
FLUX.2 [dev], FLUX.3 distilled and MiniMax H3 are guidance-distilled: their modular pipelines have no guider, only
``"distilled"``. Cosmos 3 has no guider either but runs CFG itself (``guidance_scale``, off at 1).

Modular blocks of diffusers 0.42.1 not covered here, and why:

- Wan Animate 2 (``WanAnimate2Blocks``): each segment first runs a reference-extraction pass
  (``kv_cache_mode="extract"``) outside the guider's batches. Spectrum used to name it by the guider's state
  left from the last run, which split the uncond branch; it now takes such a call as one of no branch of the
  guider's (a ``default`` trajectory beside ``cond`` / ``uncond``, checked with a tiny build by a script), and the
  generic checks here expect only the guider's branches, so the family is not in ``MODULAR`` yet. Its tiny build
  needs 1280-wide CLIP features and a Wan VAE that encodes and decodes each segment in the loop.
- Echo (``EchoBlocks``): no classic pipeline; DMD-distilled, it has no scheduler component (its loop steps
  its own ``sigmas``). Spectrum places it by ``SpectrumConfig(num_inference_steps=N)`` or ``denoising_loop(pipe,
  num_inference_steps=N)`` (tests/test_core.py tests a pipeline without a scheduler); the generic checks here
  enable Spectrum without a step count, so it is not in ``MODULAR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import torch

from families import FAMILIES

# Steps the modular pipelines do not take, or that would need a text encoder / VAE decoder (or, FLUX.3's
# and Ideogram 4's prompt upsamplers, ERNIE-Image's prompt enhancer and MiniMax Music 3's semantic generator, a
# language model).
_DROPPED_BLOCKS = ("text_encoder", "decode", "after_decode", "prompt_upsampler", "prompt_upsample", "prompt_enhancer",
                   "semantic_generator")
# The classic pipeline's components a modular pipeline takes over.
_SHARED = ("transformer", "transformer_2", "unet", "scheduler", "vae", "audio_vae")
# Classic kwargs the modular pipelines do not take (they warn and ignore the rest of what they do not know).
_CLASSIC_ONLY = ("output_type", "max_sequence_length", "use_resolution_binning", "negative_prompt")


def _same(latents: torch.Tensor, pipe, kwargs) -> torch.Tensor:
    return latents


def _flux_unpack(latents, pipe, kwargs):
    """FLUX.1 / Qwen-Image classic latent output is packed 2x2 tokens (Qwen-Image 2.1: unpatched tokens); the
    modular one is the latent grid."""
    return pipe._unpack_latents(latents, kwargs["height"], kwargs["width"], pipe.vae_scale_factor)


def _flux2_tokens_to_grid(latents, pipe, kwargs):
    """FLUX.2 [dev] classic latent output is (B, tokens, C) in row-major order; the modular one (B, C, h, w)."""
    rows, cols = kwargs["height"] // (2 * pipe.vae_scale_factor), kwargs["width"] // (2 * pipe.vae_scale_factor)
    return latents.transpose(1, 2).reshape(latents.shape[0], latents.shape[2], rows, cols)


def _ltx_unpack(latents, pipe, kwargs):
    frames = (kwargs["num_frames"] - 1) // pipe.vae_temporal_compression_ratio + 1
    rows = kwargs["height"] // pipe.vae_spatial_compression_ratio
    cols = kwargs["width"] // pipe.vae_spatial_compression_ratio
    return pipe._unpack_latents(
        latents, frames, rows, cols, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    )


def _krea2_unpack(latents, pipe, kwargs):
    """Krea 2's classic latent output is packed 2x2 tokens (B, tokens, C); the modular one (B, C, 1, h, w)."""
    return pipe._unpack_latents(latents, kwargs["height"], kwargs["width"])


def _qwen21_masks(kwargs):
    """Qwen-Image 2.1's modular denoise step takes the text masks and the vision-token mask of the prompt (no
    image tokens in a text-only prompt); the classic pipeline defaults them."""
    out = {}
    for prefix in ("", "negative_"):
        embeds = kwargs.get(f"{prefix}prompt_embeds")
        if embeds is not None:
            out[f"{prefix}prompt_embeds_mask"] = torch.ones(embeds.shape[:2], dtype=torch.long)
            out[f"{prefix}image_pad_mask"] = torch.zeros(embeds.shape[:2], dtype=torch.bool)
    return out


def _tiny_denoiser(cls: str, **config):
    """The tiny denoiser of tests/denoisers.py for class ``cls`` (zero-initialised weights made small random),
    with ``config`` changed where given."""
    import denoisers

    (entry,) = [d for d in denoisers.DENOISERS if d.cls == cls]
    model = denoisers.build(entry)[0]
    if not config:
        return model
    denoisers.seeded()
    model = type(model).from_config(model.config, **config)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(7)) * 0.02)
    return model.eval()


def _flux3_parts(guided: bool):
    """FLUX.3 (no classic pipeline): the tiny Flux3Transformer2DModel of tests/denoisers.py (16 latent channels
    after the 2x2 packing, inner 32, text 24, timestep 20); without a VAE the blocks take 8x spatial, so 32x48
    pixels are 2x3 packed tokens; two images per prompt. The base model's guider runs CFG at scale 4; the
    distilled blocks have no guider and a flow-map transformer (it also embeds the target timestep)."""

    def parts():
        from diffusers import FlowMatchEulerDiscreteScheduler

        transformer = _tiny_denoiser("Flux3Transformer2DModel", **({} if guided else {"flow_map": True}))
        components = dict(transformer=transformer,
                          scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        g = torch.Generator().manual_seed(11)
        kwargs = dict(prompt_embeds=torch.randn(1, 5, 24, generator=g), num_images_per_prompt=2, height=32,
                      width=48, num_inference_steps=8)
        if guided:
            kwargs.update(negative_prompt_embeds=torch.randn(1, 5, 24, generator=g), guidance_scale=4.0)
        return components, kwargs

    return parts


def _ernie_image_parts():
    """ERNIE-Image (no classic pipeline): the tiny ErnieImageTransformer2DModel of tests/denoisers.py (16 latent
    channels, patch 1, inner 32, text 24); the blocks take one text tensor per prompt (two prompts, 5 and 3
    tokens: padded, with their lengths; the negatives 3 and 5) and 16x spatial without a VAE, so 64x96 pixels
    are 4x6 latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(12)
    embeds = [torch.randn(5, 24, generator=g), torch.randn(3, 24, generator=g)]
    # The negatives pad to the same length (the features hold the text tokens: equal shapes across branches).
    negatives = [torch.randn(3, 24, generator=g), torch.randn(5, 24, generator=g)]
    components = dict(transformer=_tiny_denoiser("ErnieImageTransformer2DModel"),
                      scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    return components, dict(prompt_embeds=embeds, negative_prompt_embeds=negatives, height=64, width=96,
                            num_inference_steps=8, guidance_scale=4.0)


def _cosmos3_parts():
    """Cosmos 3 Omni (no classic pipeline taking embeddings: Cosmos3OmniPipeline tokenizes the prompt itself):
    the tiny Cosmos3OmniTransformer of tests/denoisers.py (4 latent channels patched 2x2 into 16, inner 24,
    hidden 32, a 32-token vocabulary); the modular blocks take the token ids (cond 3 tokens, uncond 4), so no
    tokenizer is needed. CFG is the blocks' own (guidance_scale, cache_context cond / uncond), no guider.
    5 frames at 64x96 pixels (16x spatial, 4x temporal without a VAE) are 2 latent frames of 4x6."""
    from diffusers import UniPCMultistepScheduler

    components = dict(
        transformer=_tiny_denoiser("Cosmos3OmniTransformer"),
        scheduler=UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0),
    )
    return components, dict(cond_input_ids=torch.tensor([1, 2, 3]), uncond_input_ids=torch.tensor([4, 5, 6, 7]),
                            num_frames=5, height=64, width=96, num_inference_steps=8, guidance_scale=4.0)


# LTX-2 as plain CFG on both streams: no spatio-temporal guidance, no modality isolation (the classic default
# runs both as extra passes of the positive batch; the test's branches are cond / uncond).
_LTX2_PLAIN = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0)


def _ltx2_grid(latents, pipe, kwargs):
    """The modular LTX-2 output (packed video tokens, then packed, normalised audio tokens, per sample) in the
    classic layout (video (C, F, H, W), then denormalised audio (C, L, M), per sample)."""
    cfg = pipe.transformer.config
    frames = (kwargs["num_frames"] - 1) // pipe.vae_temporal_compression_ratio + 1
    rows = kwargs["height"] // pipe.vae_spatial_compression_ratio
    cols = kwargs["width"] // pipe.vae_spatial_compression_ratio
    batch, video_size = latents.shape[0], cfg.in_channels * frames * rows * cols
    video = latents[:, :video_size].reshape(batch, frames * rows * cols, cfg.in_channels)
    video = pipe._unpack_latents(video, frames, rows, cols, 1, 1)
    audio = latents[:, video_size:].reshape(batch, -1, cfg.audio_in_channels)
    audio = pipe._denormalize_audio_latents(audio, pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    mel = pipe.audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
    audio = pipe._unpack_audio_latents(audio, audio.shape[1], num_mel_bins=mel)
    return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)


def _ltx2_guiders(kwargs, enabled):
    """LTX-2's video and audio guiders (LTX2Guidance) at the classic scales and rescales (the classic defaults:
    3, 7 and 0.7), plain CFG."""
    from diffusers.guiders import LTX2Guidance

    plain = dict(stg_scale=0.0, modality_scale=1.0, enabled=enabled)
    video, rescale = kwargs.get("guidance_scale", 3.0), kwargs.get("guidance_rescale", 0.7)
    audio = dict(guidance_scale=kwargs.get("audio_guidance_scale", video),
                 guidance_rescale=kwargs.get("audio_guidance_rescale", rescale))
    return {"guider": LTX2Guidance(guidance_scale=video, guidance_rescale=rescale, **plain),
            "audio_guider": LTX2Guidance(**audio, **plain)}


def _ltx2_connectors(pipe, call):
    """The modular LTX-2 denoise takes the text connectors' outputs (its dropped text step runs them): the classic
    pipeline's connectors, run on each prompt batch as the classic call runs them."""
    call = {k: v for k, v in call.items()
            if k not in _LTX2_PLAIN and not k.endswith(("guidance_scale", "guidance_rescale"))}
    call.pop("spatio_temporal_guidance_blocks", None)
    for prefix in ("", "negative_"):
        embeds, mask = call.pop(f"{prefix}prompt_embeds", None), call.pop(f"{prefix}prompt_attention_mask", None)
        if embeds is None:
            continue
        with torch.no_grad():
            video, audio, attn = pipe.connectors(embeds, mask, padding_side="left")
        call.update({f"{prefix}connector_prompt_embeds": video, f"{prefix}connector_audio_prompt_embeds": audio,
                     f"{prefix}connector_attention_mask": attn})
    # Outputs of the dropped text step.
    call.update(batch_size=call["connector_prompt_embeds"].shape[0], dtype=pipe.transformer.dtype)
    return call


def _minimax_h3_parts():
    """MiniMax H3 text-to-video-and-audio (no classic pipeline; guidance-distilled, no guider): the tiny
    MiniMaxH3Transformer3DModel of tests/denoisers.py (video 4 latent channels patched 2x2 into 16, audio 6,
    hidden 24, inner 32, text 20) and tiny video and audio VAEs, whose chunking and rates the blocks read to lay
    out the packed video + audio sequence (16x spatial, 17 frames per chunk in 5 latents; 32 kHz). Its shortest
    video is 5 s (124 frames): at 32x64 pixels, 37 latent frames of 2x4 (1x2 tokens) and 207 audio latents."""
    from diffusers import AutoencoderKLMiniMaxH3, AutoencoderKLMiniMaxH3Audio, MiniMaxH3Scheduler

    torch.manual_seed(5)
    vae = AutoencoderKLMiniMaxH3(
        latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
        spatial_downsample_factors=(2, 2, 2, 2, 1), temporal_downsample_factors=(1, 2, 2, 1, 1), norm_num_groups=4,
        decoder_num_layers=1, decoder_num_attention_heads=2, decoder_attention_head_dim=8, latents_mean=(0.0,) * 4,
        latents_std=(1.0,) * 4,
    )
    audio_vae = AutoencoderKLMiniMaxH3Audio(
        encoder_dim=4, encoder_rates=(2, 2), latent_dim=12, latent_channels=6, num_attention_heads=2, decoder_dim=16,
        decoder_rates=(2, 2), decoder_kernel_sizes=(4, 4), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
    )
    components = dict(transformer=_tiny_denoiser("MiniMaxH3Transformer3DModel"), vae=vae, audio_vae=audio_vae,
                      scheduler=MiniMaxH3Scheduler(), audio_scheduler=MiniMaxH3Scheduler())
    g = torch.Generator().manual_seed(13)
    return components, dict(prompt_embeds=torch.randn(1, 5, 20, generator=g),
                            text_token_tags=torch.ones(5, dtype=torch.long), height=32, width=64, num_frames=124,
                            num_inference_steps=9)


def _anima_parts():
    """Anima (no classic pipeline): the tiny CosmosTransformer3DModel of tests/denoisers.py (4 latent channels,
    patch 2x2, inner 32, text 24) and a tiny AnimaTextConditioner (Qwen states 20 wide and T5 token ids from a
    40-token vocabulary to the transformer's 24-wide text, model width 32, padded to at least 6 tokens) that the
    blocks run before the loop; cond 5 Qwen / 4 T5 tokens, uncond 3 / 6. Without a VAE the blocks take 8x
    spatial, so 64x96 pixels are one latent frame of 8x12; two images per prompt."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.models.condition_embedders.condition_embedder_anima import AnimaTextConditioner

    torch.manual_seed(3)
    conditioner = AnimaTextConditioner(source_dim=20, target_dim=24, model_dim=32, num_layers=1, num_attention_heads=2,
                                       target_vocab_size=40, min_sequence_length=6)
    components = dict(transformer=_tiny_denoiser("CosmosTransformer3DModel"), text_conditioner=conditioner.eval(),
                      scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    g = torch.Generator().manual_seed(14)
    kwargs = dict(height=64, width=96, num_images_per_prompt=2, num_inference_steps=8, guidance_scale=4.0)
    for prefix, qwen, t5 in (("", 5, 4), ("negative_", 3, 6)):
        kwargs.update({f"{prefix}qwen_prompt_embeds": torch.randn(1, qwen, 20, generator=g),
                       f"{prefix}qwen_attention_mask": torch.ones(1, qwen, dtype=torch.long),
                       f"{prefix}t5_input_ids": torch.randint(0, 40, (1, t5), generator=g),
                       f"{prefix}t5_attention_mask": torch.ones(1, t5, dtype=torch.long)})
    return components, kwargs


def _minimax_music3_parts():
    """MiniMax Music 3 (no classic pipeline): the tiny MiniMaxMusic3Transformer1DModel of tests/denoisers.py (8
    latent channels, inner 32, condition 24) and a tiny MiniMaxMusic3ConditionEncoder (two 20-wide hidden states
    per frame of the dropped autoregressive stage, resampled 2x onto the latent timeline); the blocks take the
    frames' hidden states (7 frames: one 14-latent window) and condition the uncond branch on zeros. One song
    per call (the blocks draw batch-1 latents)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, MiniMaxMusic3ConditionEncoder

    torch.manual_seed(4)
    encoder = MiniMaxMusic3ConditionEncoder(condition_hidden_dim=20, num_condition_layers=2, out_dim=24,
                                            input_sampling_rate=24000, input_hop_length=960,
                                            output_sampling_rate=24000, output_hop_length=480)
    components = dict(transformer=_tiny_denoiser("MiniMaxMusic3Transformer1DModel"), condition_encoder=encoder.eval(),
                      scheduler=FlowMatchEulerDiscreteScheduler())
    g = torch.Generator().manual_seed(15)
    return components, dict(frame_hiddens=torch.randn(1, 7, 40, generator=g), num_inference_steps=8,
                            guidance_scale=4.0)


def _ltx25_parts():
    """LTX-2.5 (no classic pipeline: diffusers 0.42.1 has LTX25ModularPipeline only; its blocks are LTX-2's but
    for the decoder, which is dropped): the tiny classic LTX-2 family's transformer, scheduler, VAEs and text
    connectors (families_new.ltx2), its kwargs as plain CFG on both streams (``_LTX2_PLAIN``, audio scale 7).
    The duration step is skipped (``num_frames`` given)."""
    pipe, kwargs = FAMILIES["ltx2"].build()
    kwargs.update(_LTX2_PLAIN, audio_guidance_scale=7.0)
    return {n: getattr(pipe, n) for n in ("transformer", "scheduler", "vae", "audio_vae", "connectors")}, kwargs


def _ideogram4_parts():
    """Ideogram 4 (no classic pipeline): two tiny Ideogram4Transformer2DModel of tests/denoisers.py (16 channels:
    4 latent channels patched 2x2, inner 32, text 24, adaLN 20), the conditional one of 2 layers and the
    unconditional one (which CFG runs on every step, on zeroed text) of 1; the blocks take the text encoder's
    features (two prompts of 5 and 3 tokens, padded) and lengths. 32x48 pixels are 4x6 latents, 2x3 tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(17)
    features = torch.randn(2, 5, 24, generator=g)
    features[1, 3:] = 0
    components = dict(transformer=_tiny_denoiser("Ideogram4Transformer2DModel"),
                      unconditional_transformer=_tiny_denoiser("Ideogram4Transformer2DModel", num_layers=1),
                      scheduler=FlowMatchEulerDiscreteScheduler())
    return components, dict(text_features=features, text_lengths=[5, 3], height=32, width=48, num_inference_steps=8)


def _ideogram4_schedule(pipe, call):
    """Ideogram 4's CFG weight per step (its ``guidance_schedule`` must have one per step): 4 throughout."""
    return {**call, "guidance_schedule": [4.0] * call["num_inference_steps"]}


@dataclass
class ModularFamily:
    name: str  # the classic family in families.FAMILIES (or, with ``parts``, the MODULAR key only)
    blocks: str  # the blocks class in diffusers.modular_pipelines
    guidance: tuple[str, ...]  # the modes it runs: ("cfg", "none") through a guider, or ("distilled",)
    scale_key: str = "guidance_scale"  # the classic kwarg that scales CFG
    # Z-Image's classic CFG is pos + s (pos - neg): the guider's original formulation, off at s = 0.
    original_formulation: bool = False
    # The classic output in the modular pipeline's latent layout; the modular FLUX.2 [klein] output is
    # normalised and patchified, the classic one is not, so klein maps the modular output instead.
    classic_layout: Callable[[torch.Tensor, Any, dict], torch.Tensor] = _same
    modular_layout: Callable[[torch.Tensor, Any, dict], torch.Tensor] | None = None
    config: dict[str, Any] | None = None  # modular pipeline config values (Wan2.2's boundary_ratio)
    # Wan and LTX declare the negative embeddings required even with the guider disabled (which ignores them).
    negatives_required: bool = False
    # Inputs the modular pipeline needs that the classic call has not (masks it defaults), from the classic kwargs.
    extra_inputs: Callable[[dict], dict] | None = None
    # A family without a classic pipeline: () -> (components by name, call kwargs with the negatives), the tiny
    # denoiser of tests/denoisers.py plus what the blocks need; the modular-equals-classic check skips it.
    parts: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None
    # Why the modular pipeline's output differs from the classic one's even without Spectrum (a diffusers
    # difference): the modular-equals-classic check skips it with this reason.
    unlike_classic: str | None = None
    # The steps kwarg that gives ``steps`` denoising steps is steps + this (MiniMaxH3Scheduler: n sigmas, n - 1
    # model evaluations, timesteps = 1 - sigmas[:-1]).
    steps_offset: int = 0
    # No guider: CFG by the scale kwarg itself (Cosmos 3), "none" at scale 1.
    scale_in_call: bool = False
    # Classic kwargs set in every mode, and in "none" mode only (LTX-2: plain CFG on both streams).
    classic_overrides: dict[str, Any] | None = None
    none_overrides: dict[str, Any] | None = None
    # (classic kwargs, enabled) -> the modular pipeline's guiders by component name, in place of one
    # ClassifierFreeGuidance per guider slot.
    guiders: Callable[[dict, bool], dict[str, Any]] | None = None
    # (classic pipeline, modular call kwargs) -> the call kwargs the modular blocks take (LTX-2: the connectors'
    # outputs in place of the prompt embeddings).
    prepare: Callable[[Any, dict], dict] | None = None


def _klein_denormalize(latents, pipe, kwargs):
    """The modular klein output (normalised, 2x2-patchified) in the classic layout (latent-space grid)."""
    mean = pipe.vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(pipe.vae.bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps)
    return pipe._unpatchify_latents(latents * std + mean)


MODULAR: dict[str, ModularFamily] = {
    "flux": ModularFamily("flux", "FluxAutoBlocks", ("distilled",), classic_layout=_flux_unpack),
    "flux2-dev": ModularFamily("flux2-dev", "Flux2AutoBlocks", ("distilled",), classic_layout=_flux2_tokens_to_grid),
    "flux2-klein": ModularFamily(
        "flux2-klein", "Flux2KleinBaseAutoBlocks", ("cfg", "none"), modular_layout=_klein_denormalize
    ),
    "qwen-image": ModularFamily(
        "qwen-image", "QwenImageAutoBlocks", ("cfg", "none"), scale_key="true_cfg_scale", classic_layout=_flux_unpack
    ),
    "sd3": ModularFamily("sd3", "StableDiffusion3AutoBlocks", ("cfg", "none")),
    "sdxl": ModularFamily("sdxl", "StableDiffusionXLAutoBlocks", ("cfg", "none")),
    "wan2.1": ModularFamily("wan2.1", "WanBlocks", ("cfg", "none"), negatives_required=True),
    "wan2.2": ModularFamily(
        "wan2.2", "Wan22Blocks", ("cfg", "none"), config={"boundary_ratio": 0.6}, negatives_required=True
    ),
    "ltx-video": ModularFamily(
        "ltx-video", "LTXAutoBlocks", ("cfg", "none"), classic_layout=_ltx_unpack, negatives_required=True
    ),
    "z-image": ModularFamily("z-image", "ZImageAutoBlocks", ("cfg", "none"), original_formulation=True),
    "qwen-image-2.1": ModularFamily(
        "qwen-image-2.1", "QwenImage21AutoBlocks", ("cfg", "none"), scale_key="true_cfg_scale",
        classic_layout=_flux_unpack, extra_inputs=_qwen21_masks,
    ),
    "hunyuan-video-1.5": ModularFamily("hunyuan-video-1.5", "HunyuanVideo15AutoBlocks", ("cfg", "none")),
    "helios": ModularFamily(
        "helios", "HeliosAutoBlocks", ("cfg", "none"),
        unlike_classic="diffusers' modular Helios denoise step casts the timestep to int64 (999.37 -> 999); the "
        "classic pipeline passes it as a float",
    ),
    "flux3": ModularFamily("flux3", "Flux3AutoBlocks", ("cfg", "none"), parts=_flux3_parts(True)),
    "flux3-distilled": ModularFamily(
        "flux3-distilled", "Flux3DistilledAutoBlocks", ("distilled",), parts=_flux3_parts(False)
    ),
    "ernie-image": ModularFamily("ernie-image", "ErnieImageAutoBlocks", ("cfg", "none"), parts=_ernie_image_parts),
    "cosmos3": ModularFamily(
        "cosmos3", "Cosmos3OmniBlocks", ("cfg", "none"), parts=_cosmos3_parts, scale_in_call=True
    ),
    "ltx2": ModularFamily(
        "ltx2", "LTX2AutoBlocks", ("cfg", "none"), classic_overrides={**_LTX2_PLAIN, "audio_guidance_scale": 7.0},
        none_overrides={"audio_guidance_scale": 1.0}, guiders=_ltx2_guiders, prepare=_ltx2_connectors,
        negatives_required=True, modular_layout=_ltx2_grid,
    ),
    "minimax-h3": ModularFamily(
        "minimax-h3", "MiniMaxH3Blocks", ("distilled",), parts=_minimax_h3_parts, steps_offset=1
    ),
    "krea2": ModularFamily(
        "krea2", "Krea2AutoBlocks", ("cfg", "none"), original_formulation=True, classic_layout=_krea2_unpack
    ),
    # CFG through a second denoiser on every step (no guider, cannot be turned off): tests/test_modular.py's
    # test_ideogram4_* check it, not the generic checks (``DEDICATED``).
    "ideogram4": ModularFamily(
        "ideogram4", "Ideogram4AutoBlocks", ("cfg",), parts=_ideogram4_parts, prepare=_ideogram4_schedule
    ),
    "anima": ModularFamily("anima", "AnimaAutoBlocks", ("cfg", "none"), parts=_anima_parts),
    "minimax-music3": ModularFamily(
        "minimax-music3", "MiniMaxMusic3Blocks", ("cfg", "none"), parts=_minimax_music3_parts
    ),
    "ltx25": ModularFamily(
        "ltx25", "LTX25AutoBlocks", ("cfg", "none"), parts=_ltx25_parts, guiders=_ltx2_guiders,
        prepare=_ltx2_connectors, negatives_required=True,
    ),
}

# Families whose layout the generic checks do not express; each has dedicated tests in tests/test_modular.py.
DEDICATED = ("ideogram4",)
# Every (family, guidance mode) pair, for parametrising tests.
CASES = [(name, mode) for name, family in MODULAR.items() if name not in DEDICATED for mode in family.guidance]


def _classic(name: str, guidance: str, steps: int | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    family = MODULAR[name]
    assert guidance in family.guidance, (name, guidance)
    pipe, kwargs = FAMILIES[name].build()
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    kwargs.update(family.classic_overrides or {})
    negatives = {k: v for k, v in kwargs.items() if k.startswith("negative_")}
    guider = getattr(pipe, "guider", None)
    if guider is not None:  # a classic pipeline with a guider (HunyuanVideo 1.5): the modular one shares it
        guider = guider.new()
        if guidance == "none":
            guider.disable()
        pipe.register_modules(guider=guider)
    if guidance == "none":
        kwargs = {k: v for k, v in kwargs.items() if k not in negatives}
        if guider is None:
            kwargs[family.scale_key] = 0.0 if family.original_formulation else 1.0
        kwargs.update(family.none_overrides or {})
    return pipe, kwargs, negatives


def no_classic_reason(name: str) -> str | None:
    """Why the modular family ``name`` cannot be compared with a classic pipeline, or None where it can."""
    family = MODULAR[name]
    if family.parts is not None:
        return f"{family.blocks}: diffusers 0.42.1 has no classic pipeline for it"
    return family.unlike_classic


def _from_parts(name: str, guidance: str, steps: int | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A family without a classic twin: its parts (as the attributes of a namespace), kwargs and negatives."""
    family = MODULAR[name]
    assert guidance in family.guidance, (name, guidance)
    parts, kwargs = family.parts()
    if steps is not None:
        kwargs["num_inference_steps"] = steps + family.steps_offset
    negatives = {k: v for k, v in kwargs.items() if k.startswith("negative_")}
    if guidance == "none":
        kwargs = {k: v for k, v in kwargs.items() if k not in negatives}
        if family.scale_in_call:
            kwargs[family.scale_key] = 1.0
    return SimpleNamespace(**parts), kwargs, negatives


def classic(name: str, guidance: str, steps: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The classic family, with its kwargs set for the guidance mode (and ``steps`` steps if given)."""
    pipe, kwargs, _ = _classic(name, guidance, steps)
    return pipe, kwargs


def _modular_from(name: str, guidance: str, pipe, kwargs, negatives) -> tuple[Any, dict[str, Any]]:
    import diffusers.modular_pipelines as modular
    from diffusers import ClassifierFreeGuidance

    family = MODULAR[name]
    blocks = getattr(modular, family.blocks)()
    for step in _DROPPED_BLOCKS:
        blocks.sub_blocks.pop(step, None)
    mpipe = blocks.init_pipeline()
    names = tuple(vars(pipe)) if isinstance(pipe, SimpleNamespace) else _SHARED
    components = {n: getattr(pipe, n) for n in names if n in mpipe.components and getattr(pipe, n, None) is not None}
    for guider in ("guider", "guider_2") if family.guiders is None else ():
        if guider == "guider" and getattr(pipe, "guider", None) is not None:
            components[guider] = pipe.guider
        elif guider in mpipe.components:
            scale = kwargs.get(family.scale_key, 1.0)
            components[guider] = ClassifierFreeGuidance(
                guidance_scale=scale, use_original_formulation=family.original_formulation, enabled=guidance == "cfg"
            )
    if family.guiders is not None:
        components.update(family.guiders(kwargs, guidance == "cfg"))
    mpipe.update_components(**components, **(family.config or {}))
    call = {k: v for k, v in kwargs.items() if k not in _CLASSIC_ONLY}
    if family.guidance != ("distilled",) and not family.scale_in_call:
        call.pop(family.scale_key, None)  # the guider holds the scale
    if guidance == "none" and family.negatives_required:
        call.update(negatives)
    if family.extra_inputs is not None:
        call.update(family.extra_inputs(call))
    if family.prepare is not None:
        call = family.prepare(pipe, call)
    return mpipe, call


def build(name: str, guidance: str, steps: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The tiny modular pipeline of family ``name`` in guidance mode ``guidance``, and its call kwargs."""
    if MODULAR[name].parts is not None:
        return _modular_from(name, guidance, *_from_parts(name, guidance, steps))
    return _modular_from(name, guidance, *_classic(name, guidance, steps))


def build_pair(name: str, guidance: str, steps: int | None = None) -> tuple[tuple[Any, dict], tuple[Any, dict]]:
    """The modular and the classic pipeline of one family sharing the same component objects."""
    assert MODULAR[name].parts is None, f"{name} has no classic pipeline"
    pipe, kwargs, negatives = _classic(name, guidance, steps)
    return _modular_from(name, guidance, pipe, kwargs, negatives), (pipe, kwargs)


def images_per_call(kwargs: dict[str, Any]) -> int:
    """Images (or videos) one classic call makes: prompts times images per prompt."""
    embeds = kwargs["prompt_embeds"]
    prompts = len(embeds) if isinstance(embeds, list) else embeds.shape[0]
    return prompts * kwargs.get("num_images_per_prompt", kwargs.get("num_videos_per_prompt", 1))


def run(mpipe, call_kwargs: dict[str, Any], seed: int = 0) -> torch.Tensor:
    """The modular pipeline's denoised latents (in its own layout); Helios's chunks joined along the frames (its
    ``latents`` is the last chunk only), LTX-2's video and audio latents joined."""
    state = mpipe(**call_kwargs, generator=torch.Generator("cpu").manual_seed(seed))
    chunks, audio = state.get("latent_chunks"), state.get("audio_latents")
    if audio is not None:  # LTX-2, MiniMax H3: each sample's video, then its audio latents, flattened
        video = state.get("latents")
        return torch.cat([video.flatten(1), audio.reshape(video.shape[0], -1)], dim=1)
    return torch.cat(chunks, dim=2) if chunks else state.get("latents")


def modular_latents(name: str, mpipe, call_kwargs, classic_pipe, classic_kwargs, seed: int = 0) -> torch.Tensor:
    """The modular run's latents in the common layout ``classic_latents`` uses."""
    out = run(mpipe, call_kwargs, seed)
    layout = MODULAR[name].modular_layout
    return layout(out, classic_pipe, classic_kwargs) if layout else out


def classic_latents(name: str, pipe, kwargs, seed: int = 0) -> torch.Tensor:
    """The classic run's latents in the common layout."""
    out = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed))
    latents = torch.as_tensor(out.images if hasattr(out, "images") else out.frames)
    return MODULAR[name].classic_layout(latents, pipe, kwargs)
