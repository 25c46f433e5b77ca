"""Tiny random-initialised pipelines of real diffusers classes, one builder per model family.

Each builder returns ``(pipeline, call_kwargs)``; calling ``pipeline(**call_kwargs)`` runs the real
pipeline class on CPU in well under a second, with prompt embeddings passed in so no text encoder
is needed. ``cfg`` says how the pipeline runs classifier-free guidance: ``"batched"`` (cond and
uncond in one denoiser call), ``"separate"`` (two calls per step) or ``None``.
"""

from __future__ import annotations

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
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    _seeded()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 16),
        height=32, width=32, num_inference_steps=STEPS, guidance_scale=3.5, output_type="latent",
    )
    return pipe, kwargs


FAMILIES: dict[str, Family] = {
    "flux": Family("flux", flux, cfg=None),
}
