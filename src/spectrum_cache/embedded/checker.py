"""Rule-based scoring of an image against its scene (no learned weights).

For every object of the scene we look only at its grid cell (shapes never leave their cell) and
score four attributes:

- position: the cell contains at least MIN_PIXELS "shape-coloured" pixels (chroma > CHROMA_MIN;
  backgrounds have chroma <= 16, shape colours >= 170);
- color: the majority of those pixels is nearest (in RGB) to the caption's colour;
- size: the number of pixels of that colour is above SIZE_SPLIT (small shapes have <= 36 pixels,
  large ones >= 50);
- shape: a triangle (apex up) has clearly less than half of its pixels in the upper half of its
  bounding box; otherwise the fill ratio of the box tells a circle (~0.7-0.8) from a square (1.0).

An attribute that depends on the shape being found (colour, size, shape) counts as wrong when the
position check fails. Separately, `extra` counts grid cells the caption leaves empty that contain a shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .data import CELL_EDGES, COLORS, POSITIONS, Scene

ATTRIBUTES: tuple[str, ...] = ("position", "color", "size", "shape")
CHROMA_MIN = 80
MIN_PIXELS = 8
SIZE_SPLIT = 43
TRIANGLE_MAX_TOP = 0.4
CIRCLE_MAX_FILL = 0.88
_NAMES = list(COLORS)
_PROTOTYPES = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)


@dataclass
class Score:
    """Counts of correct attributes (per attribute name) and of checks made."""

    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, 0))
    extra_cells: int = 0
    empty_cells: int = 0

    @property
    def accuracy(self) -> float:
        """Fraction of all attributes right."""
        return sum(self.correct.values()) / max(1, sum(self.total.values()))

    def add(self, other: "Score") -> "Score":
        """Accumulate another score into this one (returns self)."""
        for a in ATTRIBUTES:
            self.correct[a] += other.correct[a]
            self.total[a] += other.total[a]
        self.extra_cells += other.extra_cells
        self.empty_cells += other.empty_cells
        return self


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """HWC float RGB in 0..255 from a PIL image or an array (uint8, or float in [0, 1])."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 1) * 255.0
    return arr.astype(np.float32)[..., :3]


def describe_cell(cell: np.ndarray) -> dict[str, object] | None:
    """What the cell shows: None if empty, else colour, pixel count and fill ratio of that colour."""
    chroma = cell.max(-1) - cell.min(-1)
    mask = chroma > CHROMA_MIN
    if mask.sum() < MIN_PIXELS:
        return None
    nearest = np.argmin(((cell[..., None, :] - _PROTOTYPES) ** 2).sum(-1), axis=-1)
    votes = np.bincount(nearest[mask], minlength=len(_NAMES))
    color = int(votes.argmax())
    shape_mask = mask & (nearest == color)
    ys, xs = np.nonzero(shape_mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    middle = (ys.min() + ys.max()) / 2
    # Pixels on the middle row (odd heights) count half to each side.
    top = float((ys < middle).sum() + 0.5 * (ys == middle).sum()) / len(ys)
    return {"color": _NAMES[color], "pixels": len(ys), "fill": len(ys) / box, "top": top}


def classify_shape(fill: float, top: float) -> str:
    """Shape type from the fill ratio of the bounding box and the share of pixels in its upper half."""
    if top < TRIANGLE_MAX_TOP:
        return "triangle"
    return "circle" if fill < CIRCLE_MAX_FILL else "square"


def score_image(image: Image.Image | np.ndarray, scene: Scene) -> Score:
    """Score one image against the scene it was meant to show."""
    arr = _as_array(image)
    score = Score()
    used = set()
    for obj in scene.objects:
        row, col = POSITIONS[obj.position]
        used.add((row, col))
        (y0, y1), (x0, x1) = CELL_EDGES[row], CELL_EDGES[col]
        found = describe_cell(arr[y0:y1, x0:x1])
        for a in ATTRIBUTES:
            score.total[a] += 1
        if found is None:
            continue
        score.correct["position"] += 1
        score.correct["color"] += found["color"] == obj.color
        score.correct["size"] += (found["pixels"] > SIZE_SPLIT) == (obj.size == "large")
        score.correct["shape"] += classify_shape(found["fill"], found["top"]) == obj.shape
    for row, col in POSITIONS.values():
        if (row, col) not in used:
            (y0, y1), (x0, x1) = CELL_EDGES[row], CELL_EDGES[col]
            score.empty_cells += 1
            score.extra_cells += describe_cell(arr[y0:y1, x0:x1]) is not None
    return score
