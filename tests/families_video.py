"""Tiny video pipelines for the family checks (see families.py for the contract)."""

from __future__ import annotations

from typing import Any

import torch

from families import STEPS, Family, _seeded


def hunyuan_video() -> tuple[Any, dict[str, Any]]:
    """HunyuanVideo: dual- then single-stream blocks; true CFG runs cond and uncond separately. 4 latent
    channels, inner 32 (rope 4/6/6), Llama text 24, CLIP pooled 20; 5 frames at 32x48 pixels are 2 latent
    frames of 4x6."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    _seeded()
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=24,
        pooled_projection_dim=20, rope_axes_dim=(4, 6, 6),
    )
    pipe = HunyuanVideoPipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None, tokenizer_2=None,
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 20), prompt_attention_mask=mask,
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
        negative_prompt_attention_mask=torch.tensor([[1, 1, 1, 0, 0, 0]]),
        height=32, width=48, num_frames=5, num_inference_steps=STEPS, true_cfg_scale=4.0, guidance_scale=6.0,
        output_type="latent",
    )
    return pipe, kwargs


def cogvideox() -> tuple[Any, dict[str, Any]]:
    """CogVideoX: text and video tokens through one block stack; CFG batched (cache_context cond_uncond).
    4 latent channels, inner 32 (divisible by 16 for the 3D sin-cos embedding), T5 text 24, time embedding
    12; 5 frames at 16x24 pixels are 2 latent frames of 2x3; two videos per prompt."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    _seeded()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=12,
        text_embed_dim=24, num_layers=2, sample_width=3, sample_height=2, sample_frames=5, patch_size=1,
        temporal_compression_ratio=4, max_text_seq_length=6,
    )
    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing", prediction_type="v_prediction"),
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), num_videos_per_prompt=2,
        height=16, width=24, num_frames=5, num_inference_steps=STEPS, guidance_scale=6.0, max_sequence_length=6,
        output_type="latent",
    )
    return pipe, kwargs


def ltx_video() -> tuple[Any, dict[str, Any]]:
    """LTX-Video: packed latent tokens; CFG batched (cache_context cond_uncond). 4 latent channels, inner 32
    (cross-attention at the inner width, as in real checkpoints), T5 caption 24; 9 frames at 64x96 pixels
    (VAE 8x temporal, 32x spatial) are 2 latent frames of 2x3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    _seeded()
    transformer = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, num_layers=2, caption_channels=24,
    )
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]),
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_prompt_attention_mask=torch.ones(1, 6, dtype=torch.long),
        height=64, width=96, num_frames=9, num_inference_steps=STEPS, guidance_scale=3.0, output_type="latent",
    )
    return pipe, kwargs


def mochi() -> tuple[Any, dict[str, Any]]:
    """Mochi: asymmetric dual-stream blocks, reversed timesteps; CFG batched (cache_context cond_uncond).
    4 latent channels, inner 32, a caption stream of 20 (pooled_projection_dim), T5 text 24; 7 frames at
    32x48 pixels are 2 latent frames of 4x6, 2x3 patches."""
    from diffusers import FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    _seeded()
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2, pooled_projection_dim=20,
        in_channels=4, out_channels=4, qk_norm="rms_norm", text_embed_dim=24, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16,
    )
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), prompt_attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]),
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_prompt_attention_mask=torch.ones(1, 6, dtype=torch.long),
        height=32, width=48, num_frames=7, num_inference_steps=STEPS, guidance_scale=4.5, output_type="latent",
    )
    return pipe, kwargs


def _no_guardrail():
    """A stand-in for cosmos_guardrail's CosmosSafetyChecker (not installed), which the Cosmos pipelines
    require; with prompt embeddings and latent output they only move it between devices."""
    from diffusers import ConfigMixin, ModelMixin

    class NoGuardrail(ModelMixin, ConfigMixin):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("_device_marker", torch.zeros(()), persistent=False)

        def check_text_safety(self, prompt: str) -> bool:
            return True

        def check_video_safety(self, video):
            return video

    return NoGuardrail()


def cosmos() -> tuple[Any, dict[str, Any]]:
    """Cosmos 1.0 text-to-world: EDM preconditioning; CFG as two calls per step without cache_context.
    4 latent channels, inner 32, T5 text 24; 9 frames at 32x48 pixels are 2 latent frames of 4x6, 2x3
    patches."""
    from diffusers import CosmosTextToWorldPipeline, CosmosTransformer3DModel, EDMEulerScheduler

    _seeded()
    transformer = CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, mlp_ratio=2,
        text_embed_dim=24, adaln_lora_dim=4, max_size=(4, 8, 8), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False, extra_pos_embed_type="learnable",  # True needs torchvision
    )
    scheduler = EDMEulerScheduler(
        sigma_min=0.002, sigma_max=80, sigma_data=0.5, sigma_schedule="karras", num_train_timesteps=1000,
        prediction_type="epsilon", rho=7.0, final_sigmas_type="sigma_min",
    )
    pipe = CosmosTextToWorldPipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=None, scheduler=scheduler,
        safety_checker=_no_guardrail(),
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24),
        height=32, width=48, num_frames=9, num_inference_steps=STEPS, guidance_scale=7.0, output_type="latent",
    )
    return pipe, kwargs


FAMILIES: dict[str, Family] = {
    "hunyuan-video": Family("hunyuan-video", hunyuan_video, cfg="separate"),
    "cogvideox": Family("cogvideox", cogvideox, cfg="batched"),
    "ltx-video": Family("ltx-video", ltx_video, cfg="batched"),
    "mochi": Family("mochi", mochi, cfg="batched"),
    # Cosmos runs cond and uncond as two calls per step but sets no cache_context, so Spectrum tells them
    # apart by call order (branches "default" and "default[1]"), not by name: not "separate".
    "cosmos": Family("cosmos", cosmos, cfg="separate-unnamed"),
}
