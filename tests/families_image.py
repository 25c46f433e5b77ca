"""Tiny image pipelines for the family checks (see families.py for the contract)."""

from __future__ import annotations

from typing import Any

import torch

from families import STEPS, Family, _seeded



def sd3() -> tuple[Any, dict[str, Any]]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    _seeded()
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 16),
        negative_prompt_embeds=torch.randn(1, 6, 24), negative_pooled_prompt_embeds=torch.randn(1, 16),
        height=64, width=64, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )
    return pipe, kwargs


FAMILIES: dict[str, Family] = {
    "sd3": Family("sd3", sd3, cfg="batched"),
}
