"""Prompt lists for the benchmark."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_PROMPTS = "prompts.txt"
CALIBRATION_PROMPTS = "calibration_prompts.txt"
# How many calibration prompts a calibration uses by default.
DEFAULT_CALIBRATION_PROMPTS = 4


def bundled_prompts() -> list[str]:
    """The bundled list: held-out captions of the embedded model (never seen in its training)."""
    text = resources.files(__package__).joinpath(BUNDLED_PROMPTS).read_text(encoding="utf-8")
    return _lines(text)


def calibration_prompts() -> list[str]:
    """The embedded model's calibration prompts: held-out captions, none of them in ``bundled_prompts()``."""
    text = resources.files(__package__).joinpath(CALIBRATION_PROMPTS).read_text(encoding="utf-8")
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
