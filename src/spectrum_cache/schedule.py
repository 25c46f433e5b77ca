"""Which denoising steps run the network (Spectrum's adaptive window schedule)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .checks import check_int

if TYPE_CHECKING:
    from .config import SpectrumConfig


def adaptive_schedule(
    num_steps: int, warmup_steps: int, window_size: float, flex_window: float
) -> list[int]:
    """The 0-based steps on which the network runs.

    The first ``warmup_steps`` steps always run. After that a window ``W`` starts at ``window_size``;
    with ``c`` consecutive forecast steps behind us, step ``s`` runs iff ``(c + 1) mod floor(W) == 0``,
    and every such run widens the window by ``flex_window`` (the paper's alpha): dense early, sparse late.
    """
    steps = list(range(min(warmup_steps, num_steps)))
    window = float(window_size)
    consecutive_forecasts = 0
    for step in range(len(steps), num_steps):
        if (consecutive_forecasts + 1) % math.floor(window) == 0:
            steps.append(step)
            window += flex_window
            consecutive_forecasts = 0
        else:
            consecutive_forecasts += 1
    return steps


def compute_steps(config: SpectrumConfig, num_inference_steps: int | None = None, *,
                  denoiser: str | None = None) -> list[int]:
    """The 0-based steps on which the network runs for ``config``: its explicit ``compute_steps``, else
    the adaptive schedule.

    ``num_inference_steps`` overrides ``config.num_inference_steps``; one of the two must be set. An
    explicit schedule is refused (ValueError) for any step count but the one it was planned for.

    A config with one schedule per denoiser needs ``denoiser``, the name of the one asked about;
    ``num_inference_steps`` is then the steps that denoiser runs (its own trajectory's length), which must be its
    ``denoiser_steps`` where the config has them, and must hold every step of its schedule.
    """
    if config.per_denoiser:
        return _denoiser_schedule(config, num_inference_steps, denoiser)
    if num_inference_steps is None:
        num_inference_steps = config.num_inference_steps
    if num_inference_steps is None:
        raise ValueError(
            "num_inference_steps is required: the config leaves it to the pipeline (None), so pass it here."
        )
    num_inference_steps = check_int("num_inference_steps", num_inference_steps, 1)
    if config.compute_steps is not None:
        if num_inference_steps != config.num_inference_steps:
            raise ValueError(
                f"this schedule (compute_steps) was planned for {config.num_inference_steps} steps, and the run has "
                f"{num_inference_steps}: calibrate again for {num_inference_steps} steps, or run "
                f"{config.num_inference_steps}.")
        steps = config.compute_steps
        assert not isinstance(steps, Mapping)  # per_denoiser is False
        return list(steps)
    return adaptive_schedule(num_inference_steps, config.warmup_steps, config.window_size, config.flex_window)


def _denoiser_schedule(config: SpectrumConfig, num_steps: int | None, denoiser: str | None) -> list[int]:
    """One denoiser's schedule of a per-denoiser config, checked against the steps it runs."""
    schedules = config.compute_steps
    assert isinstance(schedules, Mapping)
    if denoiser is None or denoiser not in schedules:
        which = "name the denoiser (denoiser=...)" if denoiser is None else f"it has none for {denoiser!r}"
        raise ValueError(f"this config has one schedule per denoiser ({', '.join(schedules)}): {which}.")
    runs = check_int("num_inference_steps", config.num_inference_steps if num_steps is None else num_steps, 1)
    steps = schedules[denoiser]
    planned = config.denoiser_steps[denoiser] if config.denoiser_steps is not None else None
    if (planned is not None and runs != planned) or steps[-1] >= runs:
        what = f"its {planned} steps" if planned is not None else f"steps up to {steps[-1]}"
        raise ValueError(
            f"the schedule for {denoiser} (compute_steps[{denoiser!r}]) was planned for {what} of a "
            f"{config.num_inference_steps}-step pipeline call, and {denoiser} runs {runs} steps here: calibrate "
            "again for this call.")
    return list(steps)
