"""Model sizes and the pixel <-> token packing shared by training and the pipeline.

The denoiser is diffusers' FluxTransformer2DModel itself (dual-stream then single-stream MM-DiT blocks,
3-axis RoPE, AdaLN), only small. There is no VAE: like FLUX packs 2x2 latent patches into one token,
we pack PATCHxPATCH RGB pixel patches (6x6x3 = 108 channels) into one token, so a 48x48 image is an
8x8 grid of 64 tokens. The patch size of a model is read from its output channels (patch_size_of), so
the first embedded model (32x32 pixels, 4x4 patches) still loads and samples. A model may also take
coordinate channels after each token's pixels (position_features); their count is in_channels less
out_channels.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel

from .text_encoder import TinyTextEncoder

PATCH = 6
CHANNELS = 3
POSITION_UNITS = ("token", "pixel")


def _check_position_channels(channels: int) -> None:
    if channels < 0 or channels % 4:
        raise ValueError(f"position_channels must be a non-negative multiple of 4, got {channels}")


def transformer_config(width: int = 192, heads: int = 6, dual: int = 2, single: int = 4, text_dim: int = 128,
                       patch: int = PATCH, position_channels: int = 0) -> dict[str, Any]:
    """FluxTransformer2DModel kwargs; head_dim = width / heads, split over the RoPE axes (t, y, x); tokens
    are patch x patch RGB pixel patches, followed by `position_channels` coordinate features (see
    position_features) on the input only."""
    _check_position_channels(position_channels)
    head_dim = width // heads
    # RoPE axis dims must be even. The t axis is always 0 (as in FLUX), so give most of the head to y, x.
    axis = (head_dim * 3 // 8) // 2 * 2
    return dict(
        patch_size=1,
        in_channels=CHANNELS * patch * patch + position_channels,
        out_channels=CHANNELS * patch * patch,
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
    """Pixel patch side of a model: its output token has CHANNELS * patch**2 channels."""
    channels = transformer.config.out_channels or transformer.config.in_channels
    patch = round((channels / CHANNELS) ** 0.5)
    if CHANNELS * patch * patch != channels:
        raise ValueError(f"out_channels {channels} is not {CHANNELS} * patch**2")
    return patch


def position_channels_of(transformer: FluxTransformer2DModel) -> int:
    """Coordinate channels a model's input tokens carry after the pixels (0 for the first models)."""
    return transformer.config.in_channels - CHANNELS * patch_size_of(transformer) ** 2


def position_features(height: int, width: int, patch: int, channels: int, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, channels) sin/cos of each patch centre's x and y (fractions of the image side) at
    channels / 4 frequencies (pi, 2 pi, ...), to be appended to the pixel tokens.

    They give each token its absolute position directly, where FLUX has only RoPE between image queries
    and text keys (at position 0). They were added while tracing why our model ignores position words;
    alone they did not fix that (TRAINING.md). FLUX.1 Fill and its Canny/Depth models append conditioning
    channels to the packed latents the same way (in_channels > out_channels), so the transformer's code
    path is FLUX's.
    """
    _check_position_channels(channels)
    rows, cols = height // patch, width // patch
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) * patch / height
    x = (torch.arange(cols, dtype=torch.float64) + 0.5) * patch / width
    yy, xx = (g.reshape(-1, 1) for g in torch.meshgrid(y, x, indexing="ij"))
    freqs = torch.pi * torch.arange(1, channels // 4 + 1, dtype=torch.float64)
    feats = [torch.sin(xx * freqs), torch.cos(xx * freqs), torch.sin(yy * freqs), torch.cos(yy * freqs)]
    return torch.cat(feats, dim=1).to(device=device, dtype=dtype)


def model_position_features(transformer: FluxTransformer2DModel, height: int, width: int,
                            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """The coordinate channels `transformer` takes after the pixels of each token, or None if it takes none."""
    channels = position_channels_of(transformer)
    if channels == 0:
        return None
    return position_features(height, width, patch_size_of(transformer), channels, device, dtype)


def denoiser_input(tokens: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
    """The transformer's hidden_states: the pixel tokens, with the coordinate channels (if any) appended."""
    if features is None:
        return tokens
    return torch.cat([tokens, features.expand(tokens.shape[0], -1, -1)], dim=-1)


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
