"""Optional learned metrics: LPIPS, CLIP score, ImageReward, each used only where its weights load.

They need the ``learned-metrics`` extra (``pip install -e ".[bench,learned-metrics]"`` in a checkout;
the README says which torchvision to install first) and, the first time, a download. Where a
package is missing or the weights cannot be fetched (offline), the metric is skipped with a note; the
benchmark never fails for it. How loudly the notes are shown is the runner's choice (``--extra-metrics``).
"""

from __future__ import annotations

import contextlib
import io
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import first_line
from .metrics import to_nchw

CLIP_MODEL = "openai/clip-vit-base-patch16"
IMAGE_REWARD_MODEL = "ImageReward-v1.0"
# LPIPS' AlexNet needs a few pixels after its strided layers; small images are upsampled to this.
LPIPS_MIN_SIZE = 64
NAMES = ("lpips", "clip_score", "image_reward")
# --extra-metrics: "auto" tries each and skips quietly (one info line), "on" warns for each that does not
# load (the user asked for them), "off" loads none and says nothing.
MODES = ("auto", "on", "off")


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A cheap check before a download: offline, the hub's own retries take about half a minute."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ExtraMetrics:
    """The learned metrics that loaded, and a note for each that did not."""

    device: torch.device
    models: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, device: torch.device, enabled: bool = True) -> ExtraMetrics:
        """Try to load each metric; never raises."""
        metrics = cls(device)
        if not enabled:  # asked for: nothing to note
            return metrics
        loaders = {"lpips": metrics._load_lpips, "clip_score": metrics._load_clip, "image_reward": metrics._load_image_reward}
        for name, loader in loaders.items():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    metrics.models[name] = loader()
            except Exception as error:  # missing package, offline, bad cache: all mean "skip this metric"
                metrics.notes.append(f"{name}: skipped ({first_line(error)[:160]})")
        return metrics

    def skipped_line(self) -> str | None:
        """Every skipped metric in one line, or None if all loaded."""
        if not self.notes:
            return None
        return "learned metrics " + "; ".join(self.notes) + " (--extra-metrics on warns for each, off skips them)"

    def _load_lpips(self) -> Any:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(self.device).eval()

    def _load_clip(self) -> Any:
        from transformers import CLIPModel, CLIPProcessor

        try:  # the local cache first: no network needed where the weights are already here
            model = CLIPModel.from_pretrained(CLIP_MODEL, local_files_only=True)
            processor = CLIPProcessor.from_pretrained(CLIP_MODEL, local_files_only=True)
        except OSError:
            if not _reachable("huggingface.co"):
                raise OSError(f"{CLIP_MODEL} is not in the local cache and huggingface.co is unreachable") from None
            model, processor = CLIPModel.from_pretrained(CLIP_MODEL), CLIPProcessor.from_pretrained(CLIP_MODEL)
        # transformers' to() is a functools.wraps of torch's, which its types call unbound (self: PreTrainedModel).
        return model.to(self.device).eval(), processor  # type: ignore[arg-type]

    def _load_image_reward(self) -> Any:
        import ImageReward  # noqa: N813  (the package's own name)

        if not _reachable("huggingface.co"):
            raise OSError("huggingface.co is unreachable")
        return ImageReward.load(IMAGE_REWARD_MODEL, device=str(self.device))

    @torch.no_grad()
    def score(self, image: np.ndarray, reference: np.ndarray | None, prompt: str) -> dict[str, float | None]:
        """The loaded metrics of one HWC uint8 image (LPIPS against ``reference``; None where not loaded,
        or for LPIPS of the reference itself)."""
        out: dict[str, float | None] = dict.fromkeys(NAMES)
        if "lpips" in self.models and reference is not None:
            a, b = to_nchw(image).to(self.device), to_nchw(reference).to(self.device)
            if min(a.shape[-2:]) < LPIPS_MIN_SIZE:
                size = [LPIPS_MIN_SIZE * s // min(a.shape[-2:]) for s in a.shape[-2:]]
                a, b = (torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (a, b))
            metric = self.models["lpips"]
            metric.reset()
            out["lpips"] = float(metric(a, b))
        if "clip_score" in self.models:
            model, processor = self.models["clip_score"]
            inputs = processor(text=[prompt], images=[image], return_tensors="pt", padding=True, truncation=True).to(self.device)
            image_embeds = torch.nn.functional.normalize(model.get_image_features(pixel_values=inputs["pixel_values"]), dim=-1)
            text_embeds = torch.nn.functional.normalize(
                model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]), dim=-1
            )
            # CLIPScore (Hessel et al. 2021) as torchmetrics defines it: 100 * max(cos, 0).
            out["clip_score"] = float(100 * (image_embeds * text_embeds).sum(-1).clamp(min=0))
        if "image_reward" in self.models:
            from PIL import Image

            out["image_reward"] = float(self.models["image_reward"].score(prompt, Image.fromarray(image)))
        return out
