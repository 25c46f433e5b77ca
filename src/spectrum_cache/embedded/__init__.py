"""The embedded model: a tiny FLUX-architecture text-to-image model trained on synthetic shapes.

    from spectrum_cache.embedded import load_pipeline
    pipe = load_pipeline()                        # EmbeddedPipeline, a diffusers DiffusionPipeline
    image = pipe("a large red circle on the left", num_inference_steps=50).images[0]

The weights ship inside the package (weights_path()); see TRAINING.md for how they were made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .pipeline import EmbeddedPipeline

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_path() -> Path:
    """Folder of the shipped pipeline (model_index.json + component subfolders)."""
    return WEIGHTS_DIR


def load_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  weights: str | os.PathLike | None = None) -> EmbeddedPipeline:
    """Load the shipped (or `weights`) pipeline offline, cast to dtype and moved to device.

    Weights are stored in fp16; float32 is the default because CPU matmuls in fp16 are slow.
    """
    import torch

    from .pipeline import EmbeddedPipeline

    dtype = torch.float32 if dtype is None else dtype
    pipe = EmbeddedPipeline.from_pretrained(os.fspath(weights or WEIGHTS_DIR), dtype=dtype, local_files_only=True)
    return pipe.to(device)


def __getattr__(name: str) -> object:
    # EmbeddedPipeline pulls in diffusers (seconds); the vocabulary and data (numpy, PIL) must not.
    if name == "EmbeddedPipeline":
        from .pipeline import EmbeddedPipeline

        return EmbeddedPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EmbeddedPipeline", "WEIGHTS_DIR", "load_pipeline", "weights_path"]
