"""Tiny image pipelines for the family checks (see families.py for the contract)."""

from __future__ import annotations

from typing import Any

import torch

from families import STEPS, Family, _seeded


def sd3() -> tuple[Any, dict[str, Any]]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    """SD3: 4 latent channels, inner 32 (the caption projection is the inner width, as in real checkpoints),
    text 24, pooled 20; 32x48 pixels are a 4x6 latent, 2x3 patches; two prompts (the pipeline repeats precomputed
    pooled embeddings wrongly for num_images_per_prompt > 1)."""
    _seeded()
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=32, pooled_projection_dim=20,
        pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(2, 6, 24), pooled_prompt_embeds=torch.randn(2, 20),
        negative_prompt_embeds=torch.randn(2, 6, 24), negative_pooled_prompt_embeds=torch.randn(2, 20),
        height=32, width=48, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )
    return pipe, kwargs


def _flux2_parts(guidance_embeds: bool) -> tuple[Any, Any]:
    """A tiny Flux2Transformer2DModel and AutoencoderKLFlux2 (scale factor 1): the FLUX.2 pipelines read the
    VAE's latent batch-norm statistics even for latent output. 4 latent channels packed 2x2 into 16, inner 32
    (rope 4/4/4/4 over the four position axes), text 24."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    _seeded()
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, timestep_guidance_channels=8, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    return transformer, vae


def flux2_dev() -> tuple[Any, dict[str, Any]]:
    """FLUX.2 [dev]: guidance-distilled (guidance embedding), one call per step. 8x12 pixels (VAE scale 1) are
    4x6 packed tokens; two images per prompt."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    transformer, vae = _flux2_parts(guidance_embeds=True)
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), num_images_per_prompt=2, height=8, width=12,
        num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def flux2_klein() -> tuple[Any, dict[str, Any]]:
    """FLUX.2 [klein] base: no guidance distillation, true CFG in two calls."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    transformer, vae = _flux2_parts(guidance_embeds=False)
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
        transformer=transformer, is_distilled=False,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24),
        num_images_per_prompt=2, height=8, width=12, num_inference_steps=STEPS, guidance_scale=4.0,
        output_type="latent",
    )
    return pipe, kwargs


def qwen_image() -> tuple[Any, dict[str, Any]]:
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel

    """Qwen-Image: 4 latent channels packed 2x2 into 16, inner 32, text 24; 32x48 pixels are 2x3 packed
    tokens; two images per prompt."""
    _seeded()
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, axes_dims_rope=(4, 6, 6),
    )
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    mask = torch.ones(1, 6, dtype=torch.long)
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_embeds_mask=mask,
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds_mask=mask, num_images_per_prompt=2,
        height=32, width=48, num_inference_steps=STEPS, true_cfg_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def sana() -> tuple[Any, dict[str, Any]]:
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel

    """Sana: 4 latent channels, inner 32 (cross-attention at the inner width, as in real checkpoints), Gemma
    text 24; 128x192 pixels (DC-AE scale 32) are a 4x6 latent."""
    _seeded()
    transformer = SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
        sample_size=4, patch_size=1,
    )
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
    mask = torch.ones(1, 6, dtype=torch.long)
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_attention_mask=mask, negative_prompt=None,
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_prompt_attention_mask=mask,
        height=128, width=192, use_resolution_binning=False, num_inference_steps=STEPS, guidance_scale=4.5,
        output_type="latent",
    )
    return pipe, kwargs


def pixart_sigma() -> tuple[Any, dict[str, Any]]:
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    """PixArt-Sigma: 4 latent channels (8 out: learned variance), inner 32 (cross-attention at the inner
    width), T5 text 24; 32x48 pixels are a 4x6 latent, 2x3 patches."""
    _seeded()
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=32, caption_channels=24, sample_size=4, patch_size=2, norm_num_groups=4,
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    )
    mask = torch.ones(1, 6, dtype=torch.long)
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_attention_mask=mask, negative_prompt=None,
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_prompt_attention_mask=mask,
        height=32, width=48, use_resolution_binning=False, num_inference_steps=STEPS, guidance_scale=4.5,
        output_type="latent",
    )
    return pipe, kwargs


def chroma() -> tuple[Any, dict[str, Any]]:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    """Chroma: 4 latent channels packed 2x2 into 16, inner 32, T5 text 24 (the modulation approximator's own
    widths 8 and 20); 32x48 pixels are 2x3 packed tokens; two prompts (the pipeline does not repeat a
    precomputed mask for num_images_per_prompt > 1)."""
    _seeded()
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, axes_dims_rope=(4, 6, 6), approximator_num_channels=8, approximator_hidden_dim=20,
        approximator_layers=1,
    )
    pipe = ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    # The pipeline's own T5 mask is float; two prompts, of 6 and 4 tokens.
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2])
    kwargs = dict(
        prompt_embeds=torch.randn(2, 6, 24), prompt_attention_mask=mask,
        negative_prompt_embeds=torch.randn(2, 6, 24), negative_prompt_attention_mask=mask,
        height=32, width=48, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def lumina2() -> tuple[Any, dict[str, Any]]:
    """Lumina-Image 2.0: refiners on the image and caption tokens before the main layers, all skipped on
    forecast steps; the timestep rises from 0 (noise) to 1. 4 latent channels, hidden 32 (2 query heads of 16,
    one key/value head), Gemma caption 24; 32x48 pixels are a 4x6 latent, 2x3 patches; two prompts, of 6 and
    4 tokens (the pipeline does not repeat a precomputed mask for num_images_per_prompt > 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    _seeded()
    transformer = Lumina2Transformer2DModel(
        sample_size=4, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(32, 32, 32),
        cap_feat_dim=24,
    )
    pipe = Lumina2Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
        tokenizer=None,
    )
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    kwargs = dict(
        prompt_embeds=torch.randn(2, 6, 24), prompt_attention_mask=mask, negative_prompt=None,
        negative_prompt_embeds=torch.randn(2, 6, 24), negative_prompt_attention_mask=mask,
        height=32, width=48, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def z_image() -> tuple[Any, dict[str, Any]]:
    """Z-Image: latents and prompt embeddings go in as per-sample lists; cond and uncond in one call. 4 latent
    channels, inner 32, Qwen3 caption 24; 32x48 pixels are a 4x6 latent, 2x3 patches; two prompts."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    _seeded()
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, cap_feat_dim=24, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32],
    )
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=[torch.randn(6, 24), torch.randn(5, 24)],
        negative_prompt_embeds=[torch.randn(6, 24), torch.randn(4, 24)],
        height=32, width=48, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
    )
    return pipe, kwargs


def hidream() -> tuple[Any, dict[str, Any]]:
    """HiDream-I1: double- and single-stream blocks with mixture-of-experts feed-forwards; each block also
    takes one Llama layer's hidden states. 4 latent channels, inner 32, T5 text 24, Llama text 40, pooled 20;
    48x64 pixels are 3x4 packed tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline, HiDreamImageTransformer2DModel

    _seeded()
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        caption_channels=[24, 40], text_emb_dim=20, num_routed_experts=2, num_activated_experts=1,
        axes_dims_rope=(8, 4, 4), max_resolution=(16, 16), llama_layers=[0, 1],
    ).eval()  # as from_pretrained leaves it: the MoE gate and the output unpatchify depend on .training
    pipe = HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, text_encoder_4=None,
        tokenizer_4=None, transformer=transformer,
    )
    # The pipeline rescales every request to about default_sample_size**2 latent pixels (128**2 by default),
    # keeping the aspect ratio: 48x64 stays 48x64.
    pipe.default_sample_size = 8
    kwargs = dict(
        prompt_embeds_t5=torch.randn(1, 6, 24), negative_prompt_embeds_t5=torch.randn(1, 6, 24),
        prompt_embeds_llama3=torch.randn(2, 1, 6, 40), negative_prompt_embeds_llama3=torch.randn(2, 1, 6, 40),
        pooled_prompt_embeds=torch.randn(1, 20), negative_pooled_prompt_embeds=torch.randn(1, 20),
        height=48, width=64, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )
    return pipe, kwargs


FAMILIES: dict[str, Family] = {
    "sd3": Family("sd3", sd3, cfg="batched"),
    "flux2-dev": Family("flux2-dev", flux2_dev, cfg=None),
    "flux2-klein": Family("flux2-klein", flux2_klein, cfg="separate"),
    "qwen-image": Family("qwen-image", qwen_image, cfg="separate"),
    "sana": Family("sana", sana, cfg="batched"),
    "pixart-sigma": Family("pixart-sigma", pixart_sigma, cfg="batched"),
    # Chroma runs cond and uncond as two calls per step but sets no cache_context, so Spectrum tells them
    # apart by call order (branches "default" and "default[1]"), not by name: not "separate".
    "chroma": Family("chroma", chroma, cfg="separate-unnamed"),
    # Lumina2 likewise: two calls per step, no cache_context.
    "lumina2": Family("lumina2", lumina2, cfg="separate-unnamed"),
    "z-image": Family("z-image", z_image, cfg="batched"),
    "hidream": Family("hidream", hidream, cfg="batched"),
}
