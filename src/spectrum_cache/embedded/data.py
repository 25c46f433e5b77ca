"""Synthetic captioned scenes whose captions leave most of the picture open.

A caption names every object's colour and shape, and only sometimes its position or size. The rest is
random: where each object sits, how large it is, its rotation, its texture (solid, stripes, checks,
dots, smooth noise, a shading gradient) and the background (a tinted grey with a gradient, grain and faint
stripes). So one caption has many right pictures, as a prompt to a large text-to-image model does,
and the sampler's path has to choose among them as the noise goes away: the flow curves. Objects may
overlap, textures put detail at the scale of a few pixels, and gradients at the scale of the image.

Every scene is a pure function of an integer seed, so the training stream, the held-out evaluation
set and the tests see exactly the same scenes. Images are 48x48 RGB.

Colour is what identifies an object: the objects of a scene have distinct, saturated colours (hue
kept under every texture, which only darkens), while backgrounds are nearly grey. The rule-based
checker (checker.py) relies on that.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGE_SIZE = 48
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Six saturated colours about 60 degrees of hue apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "yellow": (235, 215, 45),
    "green": (50, 190, 70),
    "cyan": (40, 200, 210),
    "blue": (50, 90, 235),
    "purple": (190, 60, 220),
}
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checks", "dots", "noise", "shaded")
# Circumradius in pixels (centre to the farthest corner). A caption's size word draws from its range;
# without one the size is drawn from the whole range.
SIZES: dict[str, tuple[float, float]] = {"small": (5.0, 8.0), "large": (10.5, 14.0)}
SIZE_RANGE: tuple[float, float] = (5.0, 14.0)
# Region of the image (x0, x1, y0, y1, as fractions) where a caption's position word puts the centre.
POSITIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.12, 0.36, 0.15, 0.85),
    "right": (0.64, 0.88, 0.15, 0.85),
    "top": (0.15, 0.85, 0.12, 0.36),
    "bottom": (0.15, 0.85, 0.64, 0.88),
    "center": (0.40, 0.60, 0.40, 0.60),
}
ANYWHERE: tuple[float, float, float, float] = (0.12, 0.88, 0.12, 0.88)
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
MAX_OBJECTS = 4
OBJECT_COUNT_WEIGHTS: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)  # 1, 2, 3, 4 objects
P_STATE_POSITION = 0.4
P_STATE_SIZE = 0.35
MAX_TINT = 10  # background channels differ by at most 2 * MAX_TINT (chroma), objects by >= 80


@dataclass(frozen=True)
class CaptionObject:
    """What a caption says about one object: shape and colour always, size and position or None."""

    shape: str
    color: str
    size: str | None = None
    position: str | None = None

    def phrase(self) -> str:
        """The caption fragment, e.g. 'a small red circle on the left' or 'a blue square'."""
        words = ["a"] + ([self.size] if self.size else []) + [self.color, self.shape]
        if self.position:
            words.append(POSITION_PHRASES[self.position])
        return " ".join(words)


@dataclass(frozen=True)
class SceneObject:
    """One object: what the caption may say (shape, colour, size, position) and what it leaves open.

    `size` and `position` are None when the caption does not state them; the drawn geometry (centre,
    radius, angle) and texture are always set.
    """

    shape: str
    color: str
    size: str | None
    position: str | None
    center: tuple[float, float]
    radius: float
    angle: float
    texture: str
    texture_params: tuple[float, ...]

    @property
    def stated(self) -> CaptionObject:
        """The part of the object its caption states."""
        return CaptionObject(self.shape, self.color, self.size, self.position)

    def phrase(self) -> str:
        """The caption fragment, e.g. 'a small red circle on the left' or 'a blue square'."""
        return self.stated.phrase()


@dataclass(frozen=True)
class Scene:
    """A background and one to four objects of distinct colours, drawn in order (later ones on top)."""

    objects: tuple[SceneObject, ...]
    background: tuple[float, ...]  # base grey, tint r/g/b, gradient angle/amplitude, grain, stripe amp/period/angle
    caption_order: tuple[int, ...]

    @property
    def caption(self) -> str:
        """The objects' phrases joined with 'and', in a random order fixed by the seed."""
        return " and ".join(self.objects[i].phrase() for i in self.caption_order)

    @property
    def stated(self) -> tuple[CaptionObject, ...]:
        """What the caption states about each object, in the caption's order."""
        return tuple(self.objects[i].stated for i in self.caption_order)


def vocabulary() -> list[str]:
    """Every word any caption can contain, in a fixed order (the tokenizer's word list)."""
    words: list[str] = ["a", "and", "the", "on", "at", "in"]
    words += list(SIZES) + list(COLORS) + list(SHAPES) + list(POSITIONS)
    return words


def parse_caption(caption: str) -> tuple[CaptionObject, ...] | None:
    """The objects a caption in this grammar states ('a small red circle on the left and a blue
    square'), or None for any other text. Colours must be distinct, as in every generated scene."""
    phrase_to_position = {phrase: name for name, phrase in POSITION_PHRASES.items()}
    pattern = re.compile(
        rf"a (?:({'|'.join(SIZES)}) )?({'|'.join(COLORS)}) ({'|'.join(SHAPES)})(?: ({'|'.join(phrase_to_position)}))?"
    )
    objects = []
    for part in caption.strip().lower().split(" and "):
        match = pattern.fullmatch(part.strip())
        if match is None:
            return None
        size, color, shape, phrase = match.groups()
        objects.append(CaptionObject(shape, color, size, phrase_to_position[phrase] if phrase else None))
    if len({o.color for o in objects}) != len(objects) or len(objects) > MAX_OBJECTS:
        return None
    return tuple(objects)


def is_held_out(caption: str) -> bool:
    """About 10% of captions, chosen by a hash, are never used for training (evaluation only)."""
    return zlib.crc32(caption.encode()) % 10 == 0


def _sample_object(rng: random.Random, color: str, placed: list[SceneObject]) -> SceneObject:
    shape = rng.choice(SHAPES)
    size = rng.choice(list(SIZES)) if rng.random() < P_STATE_SIZE else None
    position = rng.choice(list(POSITIONS)) if rng.random() < P_STATE_POSITION else None
    lo, hi = SIZES[size] if size else SIZE_RANGE
    x0, x1, y0, y1 = POSITIONS[position] if position else ANYWHERE
    # Overlap is allowed, but an object may not hide most of one drawn before it: a few tries to keep
    # centres at least 0.8 of the summed radii apart, then accept whatever came last.
    for _ in range(12):
        radius = rng.uniform(lo, hi)
        center = (rng.uniform(x0, x1) * IMAGE_SIZE, rng.uniform(y0, y1) * IMAGE_SIZE)
        if all(math.dist(center, o.center) >= 0.8 * (radius + o.radius) for o in placed):
            break
    texture = rng.choice(TEXTURES)
    params = (
        rng.uniform(0.45, 0.72),          # shade of the darker texture colour
        rng.uniform(2.5, 5.5),            # period in pixels (stripes, checks, dots)
        rng.uniform(0.0, math.pi),        # texture angle
        rng.uniform(0.88, 1.08),          # brightness of the base colour
        float(rng.randrange(1 << 30)),    # seed of the noise texture
    )
    return SceneObject(shape, color, size, position, center, radius, rng.uniform(0, 2 * math.pi), texture, params)


def sample_scene(seed: int) -> Scene:
    """Draw a random scene; the same seed always gives the same scene."""
    rng = random.Random(seed)
    count = rng.choices(range(1, MAX_OBJECTS + 1), weights=OBJECT_COUNT_WEIGHTS)[0]
    colors = rng.sample(list(COLORS), count)
    objects: list[SceneObject] = []
    for color in colors:
        objects.append(_sample_object(rng, color, objects))
    background = (
        rng.uniform(20, 115),                                    # base grey
        *(rng.uniform(-MAX_TINT, MAX_TINT) for _ in range(3)),   # tint per channel
        rng.uniform(0, 2 * math.pi), rng.uniform(0, 45),         # gradient angle, amplitude
        rng.choice((0.0, rng.uniform(2, 9))),                    # grain (luminance noise) std
        rng.choice((0.0, 0.0, rng.uniform(4, 10))),              # faint stripes amplitude
        rng.uniform(3, 9), rng.uniform(0, math.pi),              # stripes period, angle
        float(rng.randrange(1 << 30)),                           # seed of the grain
    )
    order = list(range(count))
    rng.shuffle(order)
    return Scene(objects=tuple(objects), background=background, caption_order=tuple(order))


def sample_split_scene(seed: int, held_out: bool) -> Scene:
    """First scene from seed's stream whose caption is (held_out=True) or is not held out."""
    k = 0
    while True:
        scene = sample_scene(seed * 1000 + k)
        if is_held_out(scene.caption) == held_out:
            return scene
        k += 1


_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5  # (2, H, W): y, x of pixel centres
_GRID.setflags(write=False)  # shared by every render: never written


def object_mask(obj: SceneObject) -> np.ndarray:
    """Boolean (H, W) mask of the pixels the object covers (no anti-aliasing, so colours stay pure)."""
    y, x = _GRID
    cx, cy = obj.center
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    # Coordinates in the object's own rotated frame.
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    r = obj.radius
    if obj.shape == "circle":
        return u * u + v * v <= r * r
    if obj.shape == "square":
        half = r / math.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if obj.shape == "triangle":
        # Equilateral, circumradius r: the three edges' inward normals at 90, 210 and 330 degrees.
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = math.pi / 2 + k * 2 * math.pi / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= r / 2
        return inside
    raise ValueError(f"unknown shape {obj.shape!r}")


def _texture_weight(obj: SceneObject) -> np.ndarray:
    """(H, W) factor in [shade, 1] that darkens the base colour: the object's texture."""
    shade, period, angle, _, noise_seed = obj.texture_params
    y, x = _GRID
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    if obj.texture == "solid":
        t = np.zeros_like(x)
    elif obj.texture == "stripes":
        t = (np.floor(along / period) % 2).astype(np.float32)
    elif obj.texture == "checks":
        t = ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float32)
    elif obj.texture == "dots":
        du = (along / period) % 1 - 0.5
        dv = (across / period) % 1 - 0.5
        t = (du * du + dv * dv < 0.09).astype(np.float32)
    elif obj.texture == "noise":
        # Value noise with cells of `period` pixels: random at the scale of the other textures, not per
        # pixel. Per-pixel noise cannot be predicted from the caption or from its neighbours, so it
        # only taught the model to scatter noise over every object.
        cells = np.random.default_rng(int(noise_seed)).random((IMAGE_SIZE + 2, IMAGE_SIZE + 2)).astype(np.float32)
        gx, gy = x / period, y / period
        i, j = np.floor(gx).astype(int), np.floor(gy).astype(int)
        fx, fy = gx - i, gy - j
        top = cells[j, i] * (1 - fx) + cells[j, i + 1] * fx
        bottom = cells[j + 1, i] * (1 - fx) + cells[j + 1, i + 1] * fx
        t = top * (1 - fy) + bottom * fy
    elif obj.texture == "shaded":
        cx, cy = obj.center
        t = np.clip(((x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)) / (2 * obj.radius) + 0.5, 0, 1)
    else:
        raise ValueError(f"unknown texture {obj.texture!r}")
    return 1.0 - (1.0 - shade) * t


def _background(params: tuple[float, ...]) -> np.ndarray:
    base, tr, tg, tb, g_angle, g_amp, grain, s_amp, s_period, s_angle, seed = params
    y, x = _GRID
    ramp = ((x * math.cos(g_angle) + y * math.sin(g_angle)) / IMAGE_SIZE - 0.5) * g_amp
    lum = base + ramp
    lum = lum + s_amp * (np.floor((x * math.cos(s_angle) + y * math.sin(s_angle)) / s_period) % 2 - 0.5)
    if grain:
        lum = lum + np.random.default_rng(int(seed)).normal(0.0, grain, x.shape)
    # One luminance for all channels plus a fixed tint: the background's chroma stays <= 2 * MAX_TINT.
    return np.stack([lum + tr, lum + tg, lum + tb], axis=-1)


def render_array(scene: Scene) -> np.ndarray:
    """The scene as an (H, W, 3) float32 array in 0..255."""
    image = _background(scene.background)
    for obj in scene.objects:
        mask = object_mask(obj)
        base = np.asarray(COLORS[obj.color], dtype=np.float32) * obj.texture_params[3]
        image[mask] = (base[None, :] * _texture_weight(obj)[mask][:, None])
    return np.clip(image, 0, 255).astype(np.float32)


def render(scene: Scene) -> Image.Image:
    """Draw the scene as a 48x48 RGB image."""
    return Image.fromarray(np.round(render_array(scene)).astype(np.uint8))


def to_tensor_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """HWC image (uint8 or float 0..255) -> CHW float32 array in [-1, 1] (the model's pixel space)."""
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def make_batch(seeds: list[int], held_out: bool = False) -> tuple[np.ndarray, list[str]]:
    """Images (B, 3, 48, 48) in [-1, 1] and captions for the given scene seeds."""
    scenes = [sample_split_scene(s, held_out) for s in seeds]
    images = np.stack([to_tensor_array(np.round(render_array(sc))) for sc in scenes])
    return images, [sc.caption for sc in scenes]
