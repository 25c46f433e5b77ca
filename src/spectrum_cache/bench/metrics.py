"""Image quality against the full sampler's output (torchmetrics underneath)."""

from __future__ import annotations

import torch


def _check(images: torch.Tensor, reference: torch.Tensor) -> None:
    if images.shape != reference.shape or images.ndim != 4:
        raise ValueError(
            f"images and reference must be NCHW tensors of one shape, got {tuple(images.shape)} and {tuple(reference.shape)}"
        )


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of NCHW images in [0, 1] against the reference (mean over
    the batch of per-image PSNR; identical images give inf)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(images, reference)
    return float(
        peak_signal_noise_ratio(images.float(), reference.float(), data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    )


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Structural similarity of NCHW images in [0, 1] against the reference (Gaussian window; the
    window shrinks for images smaller than 11 pixels)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(images, reference)
    kernel = min(11, min(images.shape[-2:]) // 2 * 2 - 1)
    return float(structural_similarity_index_measure(images.float(), reference.float(), data_range=1.0, kernel_size=kernel))
