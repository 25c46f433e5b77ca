"""The embedded model: a tiny FLUX-architecture text-to-image model trained on synthetic shapes.

    from spectrum_cache.embedded import load_pipeline
    pipe = load_pipeline()                        # EmbeddedPipeline, a diffusers DiffusionPipeline
    image = pipe("a large red circle on the left", num_inference_steps=50).images[0]

The weights ship inside the package (weights_path()); see TRAINING.md for how they were made.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_path() -> Path:
    """Folder of the shipped pipeline (model_index.json + component subfolders)."""
    return WEIGHTS_DIR


def load_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  weights: str | os.PathLike | None = None) -> "EmbeddedPipeline":
    """Load the shipped (or `weights`) pipeline offline, cast to dtype and moved to device.

    Weights are stored in fp16; float32 is the default because CPU matmuls in fp16 are slow.
    """
    from .pipeline import EmbeddedPipeline

    pipe = EmbeddedPipeline.from_pretrained(os.fspath(weights or WEIGHTS_DIR), dtype=dtype, local_files_only=True)
    return pipe.to(device)


from .pipeline import EmbeddedPipeline  # noqa: E402  (after the helpers: the import pulls in diffusers)

__all__ = ["EmbeddedPipeline", "WEIGHTS_DIR", "load_pipeline", "weights_path"]
