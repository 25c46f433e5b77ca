"""Model sizes and the pixel <-> token packing shared by training and the pipeline.

The denoiser is diffusers' FluxTransformer2DModel itself (dual-stream then single-stream MM-DiT blocks,
3-axis RoPE, AdaLN), only small. There is no VAE: like FLUX packs 2x2 latent patches into one token,
we pack PATCHxPATCH RGB pixel patches (6x6x3 = 108 channels) into one token, so a 48x48 image is an
8x8 grid of 64 tokens. The patch size of a model is read from its in_channels (patch_size_of), so the
first embedded model (32x32 pixels, 4x4 patches) still loads and samples.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel

from .text_encoder import TinyTextEncoder

PATCH = 6
CHANNELS = 3
POSITION_UNITS = ("token", "pixel")


def transformer_config(width: int = 192, heads: int = 6, dual: int = 2, single: int = 4, text_dim: int = 128,
                       patch: int = PATCH) -> dict[str, Any]:
    """FluxTransformer2DModel kwargs; head_dim = width / heads, split over the RoPE axes (t, y, x); tokens
    are patch x patch RGB pixel patches."""
    head_dim = width // heads
    # RoPE axis dims must be even. The t axis is always 0 (as in FLUX), so give most of the head to y, x.
    axis = (head_dim * 3 // 8) // 2 * 2
    return dict(
        patch_size=1,
        in_channels=CHANNELS * patch * patch,
        num_layers=dual,
        num_single_layers=single,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text_dim,
        pooled_projection_dim=text_dim,
        guidance_embeds=False,
        axes_dims_rope=(head_dim - 2 * axis, axis, axis),
    )


def text_encoder_config(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4, max_length: int = 24) -> dict[str, Any]:
    """TinyTextEncoder kwargs; its outputs match the transformer's joint/pooled dims (= width)."""
    return dict(
        vocab_size=vocab_size,
        max_length=max_length,
        hidden_dim=width,
        num_layers=layers,
        num_heads=heads,
        joint_attention_dim=width,
        pooled_projection_dim=width,
    )


def build_models(tcfg: dict[str, Any], ecfg: dict[str, Any]) -> tuple[FluxTransformer2DModel, TinyTextEncoder]:
    """Fresh transformer and text encoder from their configs."""
    return FluxTransformer2DModel(**tcfg), TinyTextEncoder(**ecfg)


def patch_size_of(transformer: FluxTransformer2DModel) -> int:
    """Pixel patch side of a model: its token has CHANNELS * patch**2 channels."""
    patch = round((transformer.config.in_channels / CHANNELS) ** 0.5)
    if CHANNELS * patch * patch != transformer.config.in_channels:
        raise ValueError(f"in_channels {transformer.config.in_channels} is not {CHANNELS} * patch**2")
    return patch


def pack(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H/P * W/P, 3*P*P) tokens, row-major over the patch grid."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpack(tokens: torch.Tensor, height: int, width: int, patch: int = PATCH) -> torch.Tensor:
    """Inverse of pack: (B, N, 3*P*P) -> (B, 3, H, W)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, height // patch, width // patch, CHANNELS, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, CHANNELS, height, width)


def image_ids(height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              patch: int = PATCH, position_unit: str = "token") -> torch.Tensor:
    """(N, 3) RoPE positions (0, row, col) of the patch tokens, as FLUX's _prepare_latent_image_ids.

    position_unit "token" counts patches, as FLUX does; "pixel" counts pixels (row * patch). FLUX's RoPE
    (theta 10000) turns its fastest pair of dims by 1 radian per position and each next pair about 4.6x
    slower: over FLUX.1's 64 positions at 1024 px most pairs tell places apart, over our 8 only the two
    fastest of six do. Pixel units stretch the grid to 48 positions, close to FLUX's span.
    """
    if position_unit not in POSITION_UNITS:
        raise ValueError(f"position_unit must be one of {', '.join(POSITION_UNITS)}, got {position_unit!r}")
    rows, cols = height // patch, width // patch
    step = patch if position_unit == "pixel" else 1
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = step * torch.arange(rows)[:, None]
    ids[..., 2] = step * torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


def text_ids(length: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(L, 3) zeros: as in FLUX, text tokens carry no RoPE position."""
    return torch.zeros(length, 3, device=device, dtype=dtype)
