"""What a calibrated schedule was planned for, and whether a model is that: classes and config hashes.

``calibrate`` writes ``describe(pipe)`` into the config's provenance; ``enable_spectrum`` warns with
``mismatches`` when the model it is given is not the one the schedule was calibrated on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from ..config import SpectrumConfig


def config_hash(obj: Any) -> str | None:
    """A short hash of a diffusers object's ``config`` (None without one)."""
    config = getattr(obj, "config", None)
    if config is None:
        return None
    text = json.dumps(dict(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(pipe: Any, denoisers: list[tuple[str, torch.nn.Module]]) -> dict[str, Any]:
    """The pipeline's, its denoisers' and its scheduler's classes and config hashes."""
    scheduler = getattr(pipe, "scheduler", None)
    return {
        "pipeline": type(pipe).__name__,
        "denoisers": {name: {"class": type(module).__name__, "config_hash": config_hash(module)}
                      for name, module in denoisers},
        "scheduler": {"class": type(scheduler).__name__, "config_hash": config_hash(scheduler)} if scheduler else None,
    }


def mismatches(config: SpectrumConfig, target: Any, denoisers: list[tuple[str, torch.nn.Module]]) -> list[str]:
    """How ``target`` (a pipeline, or a bare denoiser with ``denoisers`` = [(its class name, it)]) differs
    from what ``config``'s calibrated schedule was planned for; empty for a config without provenance."""
    recorded = config.provenance
    if not recorded or config.compute_steps is None:
        return []
    found = []
    expected_denoisers = recorded.get("denoisers") or {}
    by_name = dict(denoisers)
    for name, expected in expected_denoisers.items():
        # A bare denoiser is named by its class: match it to the one calibrated denoiser.
        module = by_name.get(name) or (denoisers[0][1] if len(denoisers) == 1 and len(expected_denoisers) == 1 else None)
        if module is None:
            found.append(f"it has no denoiser {name!r} ({expected.get('class')}), which the schedule was calibrated on")
        elif type(module).__name__ != expected.get("class"):
            found.append(f"its {name} is a {type(module).__name__}, the schedule was calibrated on a {expected.get('class')}")
        elif config_hash(module) != expected.get("config_hash"):
            found.append(f"its {name} ({type(module).__name__}) has another config than the one calibrated on")
    scheduler, expected = getattr(target, "scheduler", None), recorded.get("scheduler")
    if scheduler is not None and expected and not isinstance(target, torch.nn.Module):
        if type(scheduler).__name__ != expected.get("class"):
            found.append(f"its scheduler is a {type(scheduler).__name__}, calibrated with a {expected.get('class')}")
        elif config_hash(scheduler) != expected.get("config_hash"):
            found.append(f"its scheduler ({type(scheduler).__name__}) has another config than the one calibrated with")
    return found
