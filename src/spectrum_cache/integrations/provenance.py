"""What a calibrated schedule was planned for, and whether a model is that: classes, config hashes and the
denoisers' weights.

``calibrate`` writes ``describe(pipe)`` into the config's provenance; ``enable_spectrum`` warns with
``mismatches`` when the model it is given is not the one the schedule was calibrated on.

What identifies a checkpoint: its class, its public config keys, and its weights (names, shapes and a few
values). Never diffusers' private config keys (``_name_or_path`` is the folder it was loaded from,
``_diffusers_version`` the library that saved it, ``_use_default_values`` what the file left out): the same
checkpoint in another folder or cache, or saved again, is the same model.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..config import SpectrumConfig

# The weights' identity reads this many parameters (spread over the sorted names) ...
SAMPLED_PARAMETERS = 8
# ... at this many positions each (spread over the flattened tensor).
SAMPLED_ELEMENTS = 4
# Sampled values match within this relative difference: the same weights loaded in float32, float16 or bfloat16
# (about 0.4 % apart) match; another checkpoint's, or float8 copies (about 6 %), do not.
SAMPLE_TOLERANCE = 1 / 64


def config_hash(obj: Any) -> str | None:
    """A short hash of a diffusers object's ``config`` (None without one)."""
    config = getattr(obj, "config", None)
    if config is None:
        return None
    public = {key: value for key, value in dict(config).items() if not str(key).startswith("_")}
    text = json.dumps(public, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_identity(module: torch.nn.Module) -> dict[str, Any]:
    """A cheap identity of ``module``'s weights: a hash of its parameters' names and shapes, and
    ``SAMPLED_PARAMETERS`` x ``SAMPLED_ELEMENTS`` of their values (None where they cannot be read: parameters on
    the meta device, quantized or sharded tensor types)."""
    named = sorted((name, parameter) for name, parameter in module.named_parameters())
    layout = ";".join(f"{name}:{tuple(parameter.shape)}" for name, parameter in named)
    samples: list[float] | None = []
    count = len(named)
    picked = sorted({round(i * (count - 1) / max(SAMPLED_PARAMETERS - 1, 1)) for i in range(SAMPLED_PARAMETERS)})
    for index in picked if count else ():
        tensor = named[index][1].detach()
        if type(tensor) is not torch.Tensor or tensor.device.type == "meta" or not tensor.is_floating_point():
            samples = None
            break
        numel = tensor.numel()
        for position in sorted({round(j * (numel - 1) / max(SAMPLED_ELEMENTS - 1, 1)) for j in range(SAMPLED_ELEMENTS)}):
            # One element by its index in each dimension: no flattened copy of a large tensor.
            coordinates = []
            for size in reversed(tensor.shape):
                position, coordinate = divmod(position, size)
                coordinates.append(coordinate)
            samples.append(float(tensor[tuple(reversed(coordinates))]))  # type: ignore[union-attr]  # None only after the break
    return {"parameters": hashlib.sha256(layout.encode()).hexdigest()[:16], "samples": samples}


def _same_weights(found: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    if found.get("parameters") != expected.get("parameters"):
        return False
    ours, theirs = found.get("samples"), expected.get("samples")
    if not isinstance(ours, list) or not isinstance(theirs, list):  # unreadable on one side: names and shapes decide
        return True
    return len(ours) == len(theirs) and all(
        isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=SAMPLE_TOLERANCE, abs_tol=1e-6)
        for a, b in zip(ours, theirs))


def describe(pipe: Any, denoisers: list[tuple[str, torch.nn.Module]]) -> dict[str, Any]:
    """The pipeline's, its denoisers' and its scheduler's classes and config hashes, and the denoisers' weights'
    identities."""
    scheduler = getattr(pipe, "scheduler", None)
    return {
        "pipeline": type(pipe).__name__,
        "denoisers": {name: {"class": type(module).__name__, "config_hash": config_hash(module),
                             "weights": weights_identity(module)}
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
        elif isinstance(expected.get("weights"), Mapping) and not _same_weights(weights_identity(module),
                                                                                 expected["weights"]):
            found.append(f"its {name} ({type(module).__name__}) has other weights than the ones calibrated on")
    scheduler, expected = getattr(target, "scheduler", None), recorded.get("scheduler")
    if scheduler is not None and expected and not isinstance(target, torch.nn.Module):
        if type(scheduler).__name__ != expected.get("class"):
            found.append(f"its scheduler is a {type(scheduler).__name__}, calibrated with a {expected.get('class')}")
        elif config_hash(scheduler) != expected.get("config_hash"):
            found.append(f"its scheduler ({type(scheduler).__name__}) has another config than the one calibrated with")
    return found
