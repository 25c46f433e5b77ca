"""calibrate on every family of the families table and every scheduler of the scheduler sweep: it returns a
schedule that runs exactly the passes asked for on every CFG branch (counted in Spectrum's summary, the experts'
passes added up), or it refuses by name, never blaming a step count no value of which could satisfy it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from families import FAMILIES, STEPS
from spectrum_cache import calibrate, disable_spectrum, enable_spectrum, spectrum_summary
from schedulers import CASES

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")]
PASSES = 6


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(one prompt's arguments, the other call arguments) of a family's call."""
    prompt = {k: v for k, v in kwargs.items() if "prompt" in k and k != "num_videos_per_prompt"
              and k != "num_images_per_prompt"}
    rest = {k: v for k, v in kwargs.items() if k not in prompt and k != "num_inference_steps"}
    return prompt, rest


def _passes_per_branch(pipe: Any) -> int:
    """Network passes of one CFG branch over the whole call, every denoiser's added up (each branch alike). A
    step's further calls (an order-2 sampler's corrector, PNDM's repeated or Runge-Kutta calls: ``default[1]``
    and on) follow the same schedule from the step they start at, so they are not the budget's."""
    per_denoiser: dict[str, set[int]] = {}
    for branch in spectrum_summary(pipe).branches:
        if branch.branch.endswith("]"):
            continue
        per_denoiser.setdefault(branch.denoiser, set()).add(len(branch.computed_steps))
    assert all(len(counts) == 1 for counts in per_denoiser.values()), per_denoiser
    return sum(counts.pop() for counts in per_denoiser.values())


def _calibrates_exactly(pipe: Any, kwargs: dict[str, Any], steps: int) -> None:
    prompt, rest = _split(kwargs)
    config = calibrate(pipe, [prompt], passes=PASSES, num_inference_steps=steps, blend_weights=(0.5,), fits=None,
                       progress=False, **rest)
    enable_spectrum(pipe, config)
    try:
        torch.manual_seed(1)
        pipe(**prompt, **rest, num_inference_steps=steps)
        assert _passes_per_branch(pipe) == PASSES
    finally:
        disable_spectrum(pipe)


# Families calibrate refuses, and the reason it must give.
REFUSED = {"qwen-image-2.1": r"the feature changes size within the run .* use the paper's schedule"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_calibrate_every_family(name: str) -> None:
    pipe, kwargs = FAMILIES[name].build()
    steps = kwargs.get("num_inference_steps", STEPS)
    if name in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name]) as refusal:
            _calibrates_exactly(pipe, kwargs, steps)
        assert "num_inference_steps" not in str(refusal.value)
        return
    _calibrates_exactly(pipe, kwargs, steps)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_calibrate_every_scheduler(case: Any) -> None:
    if case.needs is not None:
        pytest.importorskip(case.needs, reason=f"{case.scheduler} needs {case.needs}")
    pipe, kwargs = case.build()
    pipe.scheduler = case.make(pipe.scheduler.config)
    _calibrates_exactly(pipe, kwargs, 12)
