"""Tiny pipelines of the newest model families for the family checks (see families.py for the contract).

Each builder runs the family's real diffusers 0.42.1 pipeline class offline: no text encoder (prompt
embeddings are passed in), no VAE where the pipeline allows it (a tiny VAE built from its config where the
pipeline reads one even for latent output), ``output_type="latent"``. The widths differ as in real
checkpoints (tests/test_family_shapes.py checks it).

Families of the newest diffusers releases that are not here, and why (their denoisers are covered by tests/denoisers.py):

- FLUX.3, MiniMax H3: diffusers 0.42.1 ships only modular pipelines for them (``Flux3ModularPipeline``,
  ``Flux3DistilledModularPipeline``, ``MiniMaxH3ModularPipeline``), no pipeline class.
- ACE-Step (``AceStepPipeline``), LongCat audio (``LongCatAudioDiTPipeline``), Cosmos 3 (``Cosmos3OmniPipeline``):
  no prompt-embedding arguments. They tokenize the prompt themselves (Cosmos 3 through the tokenizer's chat
  template, its transformer embedding the token ids), so they need a real tokenizer, which cannot be built
  offline; ACE-Step also a condition encoder of text and lyrics and an audio tokenizer. Their negative prompt
  is a string (LongCat's default uncond is zero embeddings, ACE-Step's a learned null embedding), which the
  identical-branches check (it copies the ``negative_*`` tensors from the positive ones) cannot express.

Spectrum bugs these families found, all fixed (the builders keep the pipelines' defaults so the checks would
catch them again): Qwen-Image 2.1's KV cache shortens the head's input after step 0 (a paired branch now starts
a fresh pair); Kandinsky 5 decides CFG inline (two-call layouts now pair without the pipeline saying so); LTX-2
joins two heads' inputs (now per batch row, so batched CFG halves stay branches) and makes one-branch
"uncond_stg" / "uncond_modality" calls beside its batched one (no longer paired as halves).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from families import STEPS, Family, _seeded

# -- image ------------------------------------------------------------------------------------------


class _NoQwen3VLProcessor:
    """A stand-in for the Qwen3-VL processor, which QwenImage21Pipeline's __init__ asks for the length of its
    system prompt and the id of its image token; with prompt embeddings passed in nothing else reads it."""

    class tokenizer:  # noqa: N801 (the processor's attribute name)
        @staticmethod
        def encode(text: str) -> list[int]:
            return [0]

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> list[list[int]]:
        return [[0, 1, 2]]


def qwen_image21() -> tuple[Any, dict[str, Any]]:
    """Qwen-Image 2.1: unpatched latent tokens (one per 16x16 pixels), true CFG in cache_context cond / uncond,
    and (the pipeline's default) a KV cache of the text tokens: step 0 runs the text and image tokens, later
    steps the image tokens only, so the head's input changes shape after the first step. 16 latent channels,
    inner 32, Qwen3-VL text 24; 64x96 pixels are 4x6 tokens; two images per prompt."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline, QwenImage21Transformer2DModel

    _seeded()
    transformer = QwenImage21Transformer2DModel(
        patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        context_in_dim=24, mlp_ratio=2, axes_dims_rope=(4, 6, 6),
    )
    pipe = QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, processor=_NoQwen3VLProcessor(),
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), num_images_per_prompt=2,
        height=64, width=96, num_inference_steps=STEPS, true_cfg_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def krea2() -> tuple[Any, dict[str, Any]]:
    """Krea 2: the transformer mixes three text-encoder layers itself (layerwise and refiner text blocks before
    the main layers); CFG as two calls per step without cache_context. 4 latent channels packed 2x2 into 16,
    inner 32 (one key/value head), text 24 from 3 layers; 32x48 pixels are 2x3 packed tokens; two images per
    prompt."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Krea2Pipeline, Krea2Transformer2DModel

    _seeded()
    transformer = Krea2Transformer2DModel(
        in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=40, timestep_embed_dim=12, text_hidden_dim=24, num_text_layers=3, text_num_attention_heads=2,
        text_num_key_value_heads=1, text_intermediate_size=20, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 6, 6),
    )
    pipe = Krea2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    mask = torch.tensor([[True] * 5 + [False]])
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 3, 24), prompt_embeds_mask=mask,
        negative_prompt_embeds=torch.randn(1, 6, 3, 24), negative_prompt_embeds_mask=torch.ones(1, 6, dtype=torch.bool),
        num_images_per_prompt=2, height=32, width=48, num_inference_steps=STEPS, guidance_scale=3.0,
        output_type="latent",
    )
    return pipe, kwargs


def kandinsky5() -> tuple[Any, dict[str, Any]]:
    """Kandinsky 5 text-to-video: channels-last latents (batch, frames, height, width, channels); CFG as two
    calls per step without cache_context. 4 latent channels, inner (model_dim) 48, Qwen2.5-VL text 24, CLIP
    pooled 20; 5 frames at 32x48 pixels are 2 latent frames of 4x6, 2x3 patches; two prompts (the pipeline
    does not repeat precomputed embeddings)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky5T2VPipeline, Kandinsky5Transformer3DModel

    _seeded()
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=24, in_text_dim2=20, time_dim=12, model_dim=48, ff_dim=40,
        num_text_blocks=1, patch_size=(1, 2, 2), num_visual_blocks=2, axes_dims=(4, 6, 6),
    )
    # Its zero-initialised layers (as diffusers makes them; trained ones are not) leave the text out of the
    # visual tokens, so cond and uncond would have one feature: small random values, as tests/denoisers.py does.
    with torch.no_grad():
        for param in transformer.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape) * 0.02)
    pipe = Kandinsky5T2VPipeline(
        transformer=transformer, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    cu_seqlens = torch.tensor([0, 6, 12], dtype=torch.int32)
    kwargs = dict(
        prompt_embeds_qwen=torch.randn(2, 6, 24), prompt_embeds_clip=torch.randn(2, 20), prompt_cu_seqlens=cu_seqlens,
        negative_prompt_embeds_qwen=torch.randn(2, 6, 24), negative_prompt_embeds_clip=torch.randn(2, 20),
        negative_prompt_cu_seqlens=cu_seqlens, height=32, width=48, num_frames=5, num_inference_steps=STEPS,
        guidance_scale=3.5, output_type="latent",
    )
    return pipe, kwargs


# -- video ------------------------------------------------------------------------------------------


def _wan_vae():
    """A tiny AutoencoderKLWan (16 latent channels, 8x spatial, 4x temporal): VACE, Helios and Wan Animate read
    its latent statistics, and VACE and Wan Animate encode their conditioning with it."""
    from diffusers import AutoencoderKLWan

    _seeded(5)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
    )


# Wan-style denoisers: 16 latent channels (Wan's VAE), inner 32 (2 heads of 16), UMT5 text 24.
_WAN = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, out_channels=16, text_dim=24, freq_dim=8,
    ffn_dim=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
)


def _wan_like_kwargs() -> dict[str, Any]:
    """5 frames at 32x48 pixels: 2 latent frames of 4x6, 2x3 tokens each."""
    return dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), height=32, width=48,
        num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )


def hunyuan_video15() -> tuple[Any, dict[str, Any]]:
    """HunyuanVideo 1.5 text-to-video: the latents, a condition latent and a mask concatenated (4 + 4 + 1 = 9
    channels in), two text encoders, CFG through diffusers' ClassifierFreeGuidance guider (pred_cond /
    pred_uncond contexts). Inner 32, Qwen2.5-VL text 24, ByT5 text 20, image embeddings 28 (zeros for
    text-to-video: 3 tokens in place of SigLIP's 729); 5 frames at 64x96 pixels (VAE 16x spatial) are 2 latent
    frames of 4x6. The pipeline reads the VAE's latent channels at __init__: a tiny one."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )

    _seeded()
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=24, text_embed_2_dim=20,
        image_embed_dim=28, rope_axes_dim=(4, 6, 6), target_size=16, task_type="t2v",
    )
    _seeded(5)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1)
    pipe = HunyuanVideo15Pipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None, tokenizer_2=None,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )
    pipe.vision_num_semantic_tokens = 3
    mask, mask_2 = torch.tensor([[1, 1, 1, 1, 1, 0]]), torch.tensor([[1, 1, 1, 0]])
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_embeds_mask=mask, prompt_embeds_2=torch.randn(1, 4, 20),
        prompt_embeds_mask_2=mask_2, negative_prompt_embeds=torch.randn(1, 6, 24),
        negative_prompt_embeds_mask=torch.ones(1, 6, dtype=torch.long), negative_prompt_embeds_2=torch.randn(1, 4, 20),
        negative_prompt_embeds_mask_2=mask_2, height=64, width=96, num_frames=5, num_inference_steps=STEPS,
        output_type="latent",
    )
    return pipe, kwargs


def wan_vace() -> tuple[Any, dict[str, Any]]:
    """Wan VACE: the control video (here the pipeline's default, no video: zeros and an all-ones mask) is
    encoded once into 96 channels (16 inactive + 16 reactive latent channels + an 8x8 mask) that the VACE
    blocks read; CFG in cache_context cond / uncond. VACE blocks after main layers 0 and 2 of 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    _seeded()
    transformer = WanVACETransformer3DModel(
        **_WAN, in_channels=16, num_layers=3, rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )
    pipe = WanVACEPipeline(
        tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )
    return pipe, _wan_like_kwargs()


def skyreels_v2() -> tuple[Any, dict[str, Any]]:
    """SkyReels-V2 text-to-video (the synchronous pipeline; the diffusion-forcing ones denoise frames on their
    own schedules): Wan's layout, CFG in cache_context cond / uncond."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel

    _seeded()
    transformer = SkyReelsV2Transformer3DModel(**_WAN, in_channels=16, num_layers=2, rope_max_seq_len=32)
    pipe = SkyReelsV2Pipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=8.0),
        transformer=transformer,
    )
    return pipe, {**_wan_like_kwargs(), "guidance_scale": 6.0}


def helios() -> tuple[Any, dict[str, Any]]:
    """Helios: autoregressive chunks of 2 latent frames, each denoised from noise in a loop of its own with the
    earlier chunks as long / mid / short history; CFG in cache_context cond / uncond. 9 frames are two chunks,
    so one call runs two trajectories per branch. The pipeline reads the VAE's latent statistics: a tiny one."""
    from diffusers import HeliosPipeline, HeliosScheduler, HeliosTransformer3DModel

    _seeded()
    transformer = HeliosTransformer3DModel(
        **_WAN, in_channels=16, num_layers=2, rope_dim=(4, 6, 6),
        has_multi_term_memory_patch=True,
    )
    pipe = HeliosPipeline(
        tokenizer=None, text_encoder=None, vae=_wan_vae(),
        scheduler=HeliosScheduler(stages=1, use_dynamic_shifting=True), transformer=transformer,
    )
    kwargs = dict(_wan_like_kwargs(), num_frames=10, history_sizes=[4, 2, 1], num_latent_frames_per_chunk=2)
    return pipe, kwargs


def _random_image(generator: torch.Generator, width: int, height: int):
    import PIL.Image

    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8)
    return PIL.Image.fromarray(pixels.numpy())


def wan_animate() -> tuple[Any, dict[str, Any]]:
    """Wan Animate (animation mode): the latents, the reference and previous-segment latents and their mask
    (16 + 16 + 4 = 36 channels in), pose latents added after the patch embedding, face frames through a
    motion encoder into every second block; CFG in cache_context cond / uncond. A tiny CLIP vision encoder
    (hidden 20) gives the image embeddings: the pipeline needs the reference image itself and refuses image
    embeddings passed along with it. 5 frames at 32x48 pixels, 16x16 face frames. The face frames are black:
    the pipeline's uncond branch replaces them by -1 (black), so with equal prompts the two branches are equal
    (what the paired-mode check needs)."""
    import PIL.Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from diffusers import FlowMatchEulerDiscreteScheduler, WanAnimatePipeline, WanAnimateTransformer3DModel

    _seeded()
    transformer = WanAnimateTransformer3DModel(
        **_WAN, in_channels=36,
        latent_channels=16, num_layers=2, rope_max_seq_len=32, image_dim=20,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}, motion_encoder_size=16, motion_style_dim=8,
        motion_dim=4, motion_encoder_dim=8, face_encoder_hidden_dim=12, face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
    )
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=20, intermediate_size=28, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8,
    ))
    pipe = WanAnimatePipeline(
        tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16), image_encoder=image_encoder,
        transformer=transformer,
    )
    g = torch.Generator().manual_seed(3)
    kwargs = dict(
        image=_random_image(g, 48, 32), pose_video=[_random_image(g, 48, 32) for _ in range(5)],
        face_video=[PIL.Image.new("RGB", (16, 16)) for _ in range(5)], prompt_embeds=torch.randn(1, 6, 24),
        negative_prompt_embeds=torch.randn(1, 6, 24), height=32, width=48, segment_frame_length=5,
        prev_segment_conditioning_frames=1, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )
    return pipe, kwargs


# -- audio and video ----------------------------------------------------------------------------------


def _video_and_audio_output(cls):
    """A subclass of audio-video pipeline ``cls``, of the same name, whose output is one tensor as ``frames``: each
    sample's video latents and then its audio latents, flattened (tests/test_families.py compares ``frames``, so a
    wrong audio forecast fails the checks as a wrong video one does). Only the output object differs: the call, its
    scheduler and its ``do_classifier_free_guidance`` are the pipeline's own."""

    class VideoAndAudioOutput(cls):
        def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
            out = super().__call__(*args, **kwargs)
            video, audio = torch.as_tensor(out.frames), torch.as_tensor(out.audio)
            return SimpleNamespace(frames=torch.cat([video.flatten(1), audio.flatten(1)], dim=1))

    VideoAndAudioOutput.__name__ = VideoAndAudioOutput.__qualname__ = cls.__name__
    return VideoAndAudioOutput


def ltx2() -> tuple[Any, dict[str, Any]]:
    """LTX-2: one transformer denoises the video and the audio latents together (audio-video cross-attention in
    every block), each stream with its own head (norm_out, audio_norm_out). The pipeline's default guidance: CFG
    batched ([negative, positive]) in cache_context "cond_uncond", then two calls of the positive batch alone,
    spatio-temporal guidance ("uncond_stg", its attention perturbed in block 1 of the 2: the default, block 28,
    is past the tiny model's end) and modality isolation ("uncond_modality", no audio-video cross-attention).
    Video latents 4 channels, inner 32; audio latents 2 channels x 3 mel bins packed into 6, audio inner 16; the
    Gemma text (3 layers of 24, 72 packed) goes through tiny connectors (24 wide) for both streams. A tiny video VAE
    (32x spatial, 8x temporal, as LTX-2's) and audio VAE (16 kHz, hop 160, 4x): the pipeline reads their latent
    statistics and ratios even for latent output. 9 frames at 128x192 pixels are 2 latent frames of 4x6 tokens
    and 9 audio latent frames; two prompts (the pipeline does not repeat precomputed embeddings)."""
    from diffusers import (
        AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler, LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    _seeded()
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
        audio_in_channels=6, audio_out_channels=6, audio_num_attention_heads=2, audio_attention_head_dim=8,
        audio_cross_attention_dim=16, num_layers=2, caption_channels=24, rope_double_precision=False,
    )
    _seeded(1)
    connectors = LTX2TextConnectors(
        caption_channels=24, text_proj_in_factor=3, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=12, video_connector_num_layers=1, video_connector_num_learnable_registers=3,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=12, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=3, rope_double_precision=False,
    )
    _seeded(5)
    vae = AutoencoderKLLTX2Video(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
    )
    audio_vae = AutoencoderKLLTX2Audio(base_channels=6, ch_mult=(1, 2), num_res_blocks=1, latent_channels=2, mel_bins=12)
    pipe = _video_and_audio_output(LTX2Pipeline)(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae, text_encoder=None, tokenizer=None,
        connectors=connectors, transformer=transformer, vocoder=None,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(2, 6, 72), prompt_attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]),
        negative_prompt_embeds=torch.randn(2, 6, 72), negative_prompt_attention_mask=torch.ones(2, 6, dtype=torch.long),
        height=128, width=192, num_frames=9, num_inference_steps=STEPS, spatio_temporal_guidance_blocks=[1],
        output_type="latent",
    )
    return pipe, kwargs


def kandinsky6() -> tuple[Any, dict[str, Any]]:
    """Kandinsky 6 text-to-video-and-audio: channels-last video latents with conditioning channels (4 + 4 + a mask
    = 9 in), audio latents (batch, length, channels); the text runs through a video and an audio text branch, and
    fused blocks carry both streams to their heads (out_layer, audio_out_layer); CFG in cache_context cond /
    uncond. Video 4 channels, inner (model_dim) 48, Qwen2.5-VL text 24, CLIP pooled 20, audio 6 channels, audio
    inner 32. No video VAE (the pipeline's defaults: 8x spatial, 4x temporal); ``sample_audio`` (the default)
    needs an audio VAE and a vocoder even for latent output: tiny MMAudio ones (1.6 kHz, latent hop 32). 5 frames
    at 32x48 pixels are 2 latent frames of 4x6, 2x3 patches, and 11 audio latent frames; two videos per prompt."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler, Kandinsky6TI2VAPipeline, Kandinsky6Transformer3DModel, MMAudioVAE,
        MMAudioVocoder,
    )

    _seeded()
    transformer = Kandinsky6Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=24, in_text_dim2=20, time_dim=12, patch_size=(1, 2, 2),
        model_dim=48, ff_dim=40, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6), visual_cond=True,
        in_audio_dim=6, out_audio_dim=6, model_dim_a=32, time_dim_a=12, ff_dim_a=40, axes_dims_a=(16,),
    )
    # As for Kandinsky 5: small random values in place of the zero-initialised layers, so the text reaches the
    # tokens and cond and uncond differ.
    with torch.no_grad():
        for param in transformer.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape) * 0.02)
    _seeded(5)
    audio_vae = MMAudioVAE(
        mel_bins=8, latent_channels=6, hidden_channels=8, channel_multipliers=(1, 2), layers_per_block=1,
        sample_rate=1600, n_fft=64, hop_length=16,
    )
    vocoder = MMAudioVocoder(
        num_mels=8, upsample_initial_channel=8, upsample_rates=(2, 2), upsample_kernel_sizes=(4, 4),
        resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
    )
    pipe = _video_and_audio_output(Kandinsky6TI2VAPipeline)(
        transformer=transformer, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        scheduler=FlowMatchEulerDiscreteScheduler(), audio_vae=audio_vae, vocoder=vocoder,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 20),
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
        num_videos_per_prompt=2, height=32, width=48, num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0,
        output_type="latent",
    )
    return pipe, kwargs


# -- audio ------------------------------------------------------------------------------------------


def _frames_output(cls):
    """A subclass of audio pipeline ``cls``, of the same name, whose output holds the audio latents as ``frames``
    (tests/test_families.py reads ``images`` or ``frames``; audio pipelines return ``audios``). Only the output
    object differs: the call and its scheduler are the pipeline's own."""

    class FramesOutput(cls):
        def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
            return SimpleNamespace(frames=super().__call__(*args, **kwargs).audios)

    FramesOutput.__name__ = FramesOutput.__qualname__ = cls.__name__
    return FramesOutput


def stable_audio() -> tuple[Any, dict[str, Any]]:
    """Stable Audio Open: a 1D DiT over VAE latents, text and the start / end seconds as cross-attention
    tokens, the seconds also as a global (prepended) token; CFG batched ([negative, positive]). 8 latent channels,
    inner 32 (one key/value head), T5 text 20 projected to 24, cross-attention 28, global 48 (2 x 24); 14 latent
    frames; two waveforms per prompt. The pipeline reads the VAE's hop length and sampling rate: a tiny
    AutoencoderOobleck. CosineDPMSolverMultistepScheduler needs torchsde: the EDM DPM-Solver with the same
    v-prediction and exponential sigmas."""
    from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    _seeded()
    transformer = StableAudioDiTModel(
        sample_size=14, in_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        num_key_value_attention_heads=1, out_channels=8, cross_attention_dim=28, time_proj_dim=12,
        global_states_input_dim=48, cross_attention_input_dim=24,
    )
    _seeded(1)
    projection = StableAudioProjectionModel(text_encoder_dim=20, conditioning_dim=24, min_value=0, max_value=32)
    _seeded(5)
    vae = AutoencoderOobleck(
        encoder_hidden_size=6, downsampling_ratios=[1, 2], decoder_channels=3, decoder_input_channels=8,
        audio_channels=2, channel_multiples=[2, 4], sampling_rate=4,
    )
    scheduler = EDMDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential",
    )
    pipe = _frames_output(StableAudioPipeline)(
        vae=vae, text_encoder=None, projection_model=projection, tokenizer=None, transformer=transformer,
        scheduler=scheduler,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 20), negative_prompt_embeds=torch.randn(1, 6, 20), num_waveforms_per_prompt=2,
        audio_end_in_s=6.0, num_inference_steps=STEPS, guidance_scale=7.0, output_type="latent",
    )
    return pipe, kwargs


FAMILIES: dict[str, Family] = {
    "qwen-image-2.1": Family("qwen-image-2.1", qwen_image21, cfg="separate"),
    # Krea 2 and Kandinsky 5 run cond and uncond as two calls per step but set no cache_context: Spectrum
    # tells them apart by call order (branches "default" and "default[1]").
    "krea2": Family("krea2", krea2, cfg="separate-unnamed"),
    "kandinsky5": Family("kandinsky5", kandinsky5, cfg="separate-unnamed"),
    "hunyuan-video-1.5": Family("hunyuan-video-1.5", hunyuan_video15, cfg="separate"),
    "wan-vace": Family("wan-vace", wan_vace, cfg="separate"),
    "skyreels-v2": Family("skyreels-v2", skyreels_v2, cfg="separate"),
    "helios": Family("helios", helios, cfg="separate"),
    "wan-animate": Family("wan-animate", wan_animate, cfg="separate"),
    "stable-audio": Family("stable-audio", stable_audio, cfg="batched"),
    "ltx2": Family("ltx2", ltx2, cfg="batched"),
    "kandinsky6": Family("kandinsky6", kandinsky6, cfg="separate"),
}
