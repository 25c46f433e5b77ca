"""Image quality against the full sampler's output (SSIM from torchmetrics, a bench extra), and the
image conversions the metrics need."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_uint8(array: np.ndarray) -> np.ndarray:
    """An image array as uint8: floats in [0, 1] are scaled, uint8 is returned as is."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return array


def to_nchw(image: Any) -> torch.Tensor:
    """A PIL image or an HWC uint8 array as a 1CHW float tensor in [0, 1], the metrics' input."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.ascontiguousarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float().div(255)


def _check(images: torch.Tensor, reference: torch.Tensor) -> None:
    if images.shape != reference.shape or images.ndim != 4:
        raise ValueError(
            f"images and reference must be NCHW tensors of one shape, got {tuple(images.shape)} and {tuple(reference.shape)}"
        )


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of NCHW images in [0, 1] against the reference (mean over
    the batch of per-image PSNR; identical images give inf).

    Plain torch (10 log10(1 / MSE)), not torchmetrics: ``generate --compare`` reports it and must run
    on the base install, without the bench extra. A test checks it against torchmetrics.
    """
    _check(images, reference)
    mse = (images.double() - reference.double()).pow(2).flatten(1).mean(dim=1)
    return float((10 * torch.log10(1 / mse)).mean())


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Structural similarity of NCHW images in [0, 1] against the reference (Gaussian window; the
    window shrinks for images smaller than 11 pixels)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(images, reference)
    kernel = min(11, min(images.shape[-2:]) // 2 * 2 - 1)
    value = structural_similarity_index_measure(images.float(), reference.float(), data_range=1.0, kernel_size=kernel)
    assert isinstance(value, torch.Tensor)  # a tuple only with return_full_image=True
    return float(value)
