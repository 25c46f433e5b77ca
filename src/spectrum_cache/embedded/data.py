"""Synthetic captioned scenes: one to three coloured shapes on a dull background.

Everything is a pure function of an integer seed, so the training stream, the held-out evaluation
set and the tests all see exactly the same scenes. Images are 32x32 RGB, split into a 3x3 grid; the
five named positions are the cells of the grid's "plus" (left, right, top, bottom, center), so shapes
never overlap and a rule-based checker can find each one by looking in its cell.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Saturated colours, far apart in hue, so that a blurry sample is still classified correctly.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (40, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (200, 50, 220),
}
# Greys and dark, barely tinted tones: their chroma (max - min channel) is at most 16, while every
# shape colour has chroma >= 170, so background and shapes can never be confused.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (24, 24, 24),
    (48, 48, 48),
    (72, 72, 72),
    (96, 96, 96),
    (40, 36, 52),
    (52, 44, 36),
)
SIZES: dict[str, int] = {"small": 6, "large": 10}  # side of the shape's bounding box in pixels
# Cell (row, col) of the 3x3 grid for each position word, and the phrase used in captions.
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (1, 0),
    "right": (1, 2),
    "top": (0, 1),
    "bottom": (2, 1),
    "center": (1, 1),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# Pixel extent [start, end) of the grid's rows/columns: 11 + 10 + 11 = 32.
CELL_EDGES: tuple[tuple[int, int], ...] = ((0, 11), (11, 21), (21, 32))


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene."""

    shape: str
    color: str
    size: str
    position: str

    def phrase(self) -> str:
        """The caption fragment, e.g. 'a large red circle on the left'."""
        return f"a {self.size} {self.color} {self.shape} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    """A background colour and one to three objects at distinct positions."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]

    @property
    def caption(self) -> str:
        """The full caption: the objects' phrases joined with 'and'."""
        return " and ".join(obj.phrase() for obj in self.objects)


def vocabulary() -> list[str]:
    """Every word any caption can contain, in a fixed order (the tokenizer's word list)."""
    words: list[str] = ["a", "and", "the", "on", "at", "in"]
    words += list(SIZES) + list(COLORS) + list(SHAPES) + list(POSITIONS)
    return words


def is_held_out(caption: str) -> bool:
    """About 10% of captions, chosen by a hash, are never used for training (evaluation only)."""
    return zlib.crc32(caption.encode()) % 10 == 0


def sample_scene(seed: int) -> Scene:
    """Draw a random scene; the same seed always gives the same scene."""
    rng = random.Random(seed)
    count = rng.randint(1, 3)
    positions = rng.sample(list(POSITIONS), count)
    objects = tuple(
        SceneObject(
            shape=rng.choice(SHAPES),
            color=rng.choice(list(COLORS)),
            size=rng.choice(list(SIZES)),
            position=pos,
        )
        for pos in positions
    )
    return Scene(objects=objects, background=rng.choice(BACKGROUNDS))


def sample_split_scene(seed: int, held_out: bool) -> Scene:
    """First scene from seed's stream whose caption is (held_out=True) or is not held out."""
    # Walk a deterministic sub-stream so rejection sampling stays a pure function of seed.
    k = 0
    while True:
        scene = sample_scene(seed * 1000 + k)
        if is_held_out(scene.caption) == held_out:
            return scene
        k += 1


def object_box(obj: SceneObject) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of an object, centred in its grid cell."""
    row, col = POSITIONS[obj.position]
    side = SIZES[obj.size]
    (ys, ye), (xs, xe) = CELL_EDGES[row], CELL_EDGES[col]
    x0 = xs + (xe - xs - side) // 2
    y0 = ys + (ye - ys - side) // 2
    return x0, y0, x0 + side - 1, y0 + side - 1


def render(scene: Scene) -> Image.Image:
    """Draw the scene as a 32x32 RGB image (no anti-aliasing, so colours stay pure)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = object_box(obj)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon(((x0 + x1) / 2, y0, x0, y1, x1, y1), fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return image


def to_tensor_array(image: Image.Image) -> np.ndarray:
    """HWC uint8 image -> CHW float32 array in [-1, 1] (the model's pixel space)."""
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def make_batch(seeds: list[int], held_out: bool = False) -> tuple[np.ndarray, list[str]]:
    """Images (B, 3, 32, 32) in [-1, 1] and captions for the given scene seeds."""
    scenes = [sample_split_scene(s, held_out) for s in seeds]
    images = np.stack([to_tensor_array(render(sc)) for sc in scenes])
    return images, [sc.caption for sc in scenes]
