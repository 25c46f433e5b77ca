"""Tiny random-initialised pipelines of real diffusers classes, one builder per model family.

Each builder returns ``(pipeline, call_kwargs)``; calling ``pipeline(**call_kwargs)`` runs the real
pipeline class on CPU in well under a second, with prompt embeddings passed in so no text encoder
is needed. The configs keep the shapes of real checkpoints at toy size: the latent channels, the inner
width (heads x head_dim), the text width and the pooled width all differ (tests/test_family_shapes.py
checks it), latents are not square (more tokens along the width than the height; more than one latent
frame for video), and the flagship families run a batch of two.

``cfg`` says how the pipeline runs classifier-free guidance: ``"batched"`` (cond and uncond in one denoiser
call), ``"separate"`` (two calls per step in ``cache_context("cond")`` and
``("uncond")``), ``"separate-unnamed"`` (two calls per step with no cache_context) or ``None``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

STEPS = 12


@dataclass
class Family:
    name: str
    build: Callable[[], tuple[Any, dict[str, Any]]]
    cfg: str | None
    denoisers: tuple[str, ...] = ("transformer",)


def _seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def flux() -> tuple[Any, dict[str, Any]]:
    """FLUX.1: latents of 4 channels packed 2x2 into 16; inner 32, T5 text 24, CLIP pooled 20; 32x48 pixels
    are a 4x6 latent and 2x3 packed tokens; two images per prompt."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    _seeded()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 20), num_images_per_prompt=2,
        height=32, width=48, num_inference_steps=STEPS, guidance_scale=3.5, output_type="latent",
    )
    return pipe, kwargs


def sdxl() -> tuple[Any, dict[str, Any]]:
    """SDXL: 4 latent channels, blocks of 16 and 32, text 24, pooled 20 (the added-condition input is the
    pooled width plus six time ids of 8); 64x96 pixels are an 8x12 latent; two images per prompt."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    _seeded()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=20 + 6 * 8, cross_attention_dim=24, norm_num_groups=8,
    )
    pipe = StableDiffusionXLPipeline(
        vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 5, 24), pooled_prompt_embeds=torch.randn(1, 20),
        negative_prompt_embeds=torch.randn(1, 5, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
        num_images_per_prompt=2, height=64, width=96, num_inference_steps=STEPS, guidance_scale=5.0,
        output_type="latent",
    )
    return pipe, kwargs


def _wan_transformer(seed: int):
    """16 latent channels (Wan's VAE; the modular pipeline assumes them without a VAE), inner 32 (2 heads of 16:
    rope 8/4/4 over frames, rows, columns), UMT5 text 24."""
    from diffusers import WanTransformer3DModel

    _seeded(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=24, freq_dim=8, ffn_dim=40, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def _wan_kwargs() -> dict[str, Any]:
    """5 frames at 32x48 pixels: 2 latent frames of 4x6, 2x3 tokens each; two videos per prompt."""
    return dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), num_videos_per_prompt=2,
        height=32, width=48, num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )


def wan21() -> tuple[Any, dict[str, Any]]:
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=_wan_transformer(0),
    )
    return pipe, _wan_kwargs()


def wan22() -> tuple[Any, dict[str, Any]]:
    """Wan2.2 A14B layout: a high-noise expert, then a low-noise expert below boundary_ratio."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=_wan_transformer(0), transformer_2=_wan_transformer(1), boundary_ratio=0.6,
    )
    return pipe, _wan_kwargs()


FAMILIES: dict[str, Family] = {
    "flux": Family("flux", flux, cfg=None),
    "sdxl": Family("sdxl", sdxl, cfg="batched", denoisers=("unet",)),
    "wan2.1": Family("wan2.1", wan21, cfg="separate"),
    "wan2.2": Family("wan2.2", wan22, cfg="separate", denoisers=("transformer", "transformer_2")),
}


# Further families live in one module per group, each with its own FAMILIES dict.
for _group in ("families_image", "families_video", "families_new"):
    FAMILIES.update(importlib.import_module(_group).FAMILIES)
