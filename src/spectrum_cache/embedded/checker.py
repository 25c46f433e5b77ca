"""Rule-based scoring of an image against what its caption states (no learned weights).

Every object of a scene has its own saturated colour and backgrounds are nearly grey, so an object's
pixels are found by colour: chroma (max - min channel) above CHROMA_MIN and hue nearest to the
caption's colour. For each object the caption names, the checker scores:

- color: at least MIN_PIXELS pixels of that colour are present (the object was drawn at all);
- shape: the mask's compactness, area / (pi * r^2) with r the 95th-percentile distance of its pixels
  from their centroid, is rotation-invariant: about 0.92 for a circle, 0.79 for a square and 0.57 for a
  triangle;
- position, only if the caption states one: the centroid lies in the stated part of the image;
- size, only if the caption states one: r is below or above SIZE_SPLIT pixels.

What the caption leaves open (unstated positions and sizes, textures, background) is never scored.
Attributes of an object whose colour is missing count as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .data import COLORS, IMAGE_SIZE, CaptionObject, Scene

ATTRIBUTES: tuple[str, ...] = ("color", "shape", "position", "size")
CHROMA_MIN = 45
MIN_PIXELS = 12
HUE_TOLERANCE = 30.0  # degrees; the palette's hues are about 60 degrees apart
CIRCLE_MIN = 0.86     # compactness thresholds, calibrated on renders (tests/test_embedded.py)
SQUARE_MIN = 0.665
SIZE_SPLIT = 8.4      # pixels of r95: small objects have circumradius <= 8, large ones >= 10.5
# Where a stated position's centroid must lie (x0, x1, y0, y1 as fractions of the image): a margin
# wider than the regions data.POSITIONS draws from, because objects overlap and get clipped.
POSITION_CHECK: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.45, 0.0, 1.0),
    "right": (0.55, 1.0, 0.0, 1.0),
    "top": (0.0, 1.0, 0.0, 0.45),
    "bottom": (0.0, 1.0, 0.55, 1.0),
    "center": (0.3, 0.7, 0.3, 0.7),
}


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of (..., 3) RGB values."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360.0


_COLOR_HUES: dict[str, float] = {name: float(_hue(np.asarray(rgb, dtype=np.float64))) for name, rgb in COLORS.items()}


@dataclass
class Score:
    """Counts of correct attributes (per attribute name) and of checks made."""

    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, 0))

    @property
    def accuracy(self) -> float:
        """Fraction of all stated attributes right."""
        return sum(self.correct.values()) / max(1, sum(self.total.values()))

    def add(self, other: "Score") -> "Score":
        """Accumulate another score into this one (returns self)."""
        for a in ATTRIBUTES:
            self.correct[a] += other.correct[a]
            self.total[a] += other.total[a]
        return self


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """HWC float RGB in 0..255 from a PIL image or an array (uint8, or float in [0, 1])."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 1) * 255.0
    return arr.astype(np.float32)[..., :3]


def color_mask(arr: np.ndarray, color: str) -> np.ndarray:
    """(H, W) mask of the pixels that show `color`."""
    chroma = arr.max(-1) - arr.min(-1)
    diff = np.abs((_hue(arr) - _COLOR_HUES[color] + 180.0) % 360.0 - 180.0)
    return (chroma > CHROMA_MIN) & (diff < HUE_TOLERANCE)


def describe(mask: np.ndarray) -> dict[str, float] | None:
    """Centroid (as fractions of the image), r95 in pixels and compactness of a mask; None if too small."""
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_PIXELS:
        return None
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    r95 = float(np.percentile(np.hypot(ys + 0.5 - cy, xs + 0.5 - cx), 95)) + 0.5
    return {"x": cx / mask.shape[1], "y": cy / mask.shape[0], "radius": r95,
            "compactness": len(ys) / (np.pi * r95 * r95)}


def classify_shape(compactness: float) -> str:
    """Shape type from compactness (see the module docstring)."""
    if compactness >= CIRCLE_MIN:
        return "circle"
    return "square" if compactness >= SQUARE_MIN else "triangle"


def score_image(image: Image.Image | np.ndarray, caption: Scene | Sequence[CaptionObject]) -> Score:
    """Score one image against the attributes a caption states (a Scene, or data.parse_caption's
    objects)."""
    objects = caption.stated if isinstance(caption, Scene) else tuple(caption)
    arr = _as_array(image)
    if arr.shape[0] != IMAGE_SIZE or arr.shape[1] != IMAGE_SIZE:
        raise ValueError(f"image must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {arr.shape[1]}x{arr.shape[0]}")
    score = Score()
    for obj in objects:
        stated = ["color", "shape"] + (["position"] if obj.position else []) + (["size"] if obj.size else [])
        for a in stated:
            score.total[a] += 1
        found = describe(color_mask(arr, obj.color))
        if found is None:
            continue
        score.correct["color"] += 1
        score.correct["shape"] += classify_shape(found["compactness"]) == obj.shape
        if obj.position:
            x0, x1, y0, y1 = POSITION_CHECK[obj.position]
            score.correct["position"] += bool(x0 <= found["x"] <= x1 and y0 <= found["y"] <= y1)
        if obj.size:
            score.correct["size"] += (found["radius"] > SIZE_SPLIT) == (obj.size == "large")
    return score
