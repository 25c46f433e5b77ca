"""Prompt lists for the benchmark, and captions turned back into scenes for the embedded checker."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..embedded.data import Scene

BUNDLED_PROMPTS = "prompts.txt"


def bundled_prompts() -> list[str]:
    """The bundled list: held-out captions of the embedded model (never seen in its training)."""
    text = resources.files(__package__).joinpath(BUNDLED_PROMPTS).read_text(encoding="utf-8")
    return _lines(text)


def load_prompts(path: str | Path | None) -> list[str]:
    """One prompt per line (blank lines and lines starting with '#' are ignored); the bundled list if
    ``path`` is None. Raises FileNotFoundError / ValueError for a missing or empty file."""
    if path is None:
        return bundled_prompts()
    prompts = _lines(Path(path).read_text(encoding="utf-8"))
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_caption(caption: str) -> Scene | None:
    """The embedded model's scene for a caption in its grammar ("a large red circle on the left and
    ..."), or None for any other text (the checker then has nothing to score)."""
    from ..embedded.data import BACKGROUNDS, COLORS, POSITION_PHRASES, SHAPES, SIZES, Scene, SceneObject

    phrase_to_position = {phrase: name for name, phrase in POSITION_PHRASES.items()}
    pattern = re.compile(
        rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(phrase_to_position)})"
    )
    objects = []
    for part in caption.strip().lower().split(" and "):
        match = pattern.fullmatch(part.strip())
        if match is None:
            return None
        size, color, shape, phrase = match.groups()
        objects.append(SceneObject(shape=shape, color=color, size=size, position=phrase_to_position[phrase]))
    if len({obj.position for obj in objects}) != len(objects):
        return None  # two shapes in one cell is not a scene the model was trained on
    # The checker never looks at the background; any value makes a valid Scene.
    return Scene(objects=tuple(objects), background=BACKGROUNDS[0])
