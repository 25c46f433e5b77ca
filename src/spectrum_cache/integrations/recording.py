"""``recording``: the features Spectrum records on compute steps, for the length of a ``with`` block.

On every compute step Spectrum records each branch's feature (the output head's input, or the denoiser's
output with ``forecast_output``) into its forecaster. Inside ``with recording(pipe) as recorded:`` the
calling thread's compute steps also hand it to ``recorded``, per denoiser generation and branch, keyed
by step: what ``calibrate`` plans schedules from. Forecast steps record nothing, so to record every step,
enable Spectrum with a warm-up over the whole run (``SpectrumConfig(warmup_steps=N)``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .api import denoiser_hook, find_denoisers
from .generation import Generation


@dataclass
class RecordedRun:
    """One generation of one denoiser inside a ``recording`` block.

    ``denoiser`` is the denoiser's component name (``transformer``, Wan2.2's ``transformer_2``; a bare
    denoiser's class name), ``num_steps`` the steps it was planned to run in the generation, and
    ``features`` maps each branch label (as ``spectrum_summary`` names branches: ``cond``, ``uncond``,
    ``default``, ``cond[1]`` for a second call per step) to ``{step: kept feature}``. ``generation`` is
    Spectrum's own state of that generation (internal: ``calibrate`` reads its sampler's steps there).
    """

    denoiser: str
    num_steps: int | None
    features: dict[str, dict[int, Any]] = field(default_factory=dict)
    generation: Generation | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the steps recorded, not the features themselves
        steps = {branch: sorted(by_step) for branch, by_step in self.features.items()}
        return f"RecordedRun(denoiser={self.denoiser!r}, num_steps={self.num_steps}, steps={steps})"


class Recording:
    """What ``recording`` yields: ``runs``, one ``RecordedRun`` per denoiser generation that recorded a
    feature in the block, in the order they first did."""

    def __init__(self, keep: Callable[[torch.Tensor], Any]) -> None:
        self.runs: list[RecordedRun] = []
        self._keep = keep
        self._thread = threading.get_ident()

    def run(self, denoiser: str | None = None) -> RecordedRun:
        """The one run of ``denoiser`` (of the only denoiser that recorded, if None). Raises ValueError if
        there is not exactly one."""
        runs = [r for r in self.runs if denoiser is None or r.denoiser == denoiser]
        if len(runs) != 1:
            which = f"of {denoiser} " if denoiser is not None else ""
            raise ValueError(f"the recording holds {len(runs)} runs {which}(runs: "
                             f"{[r.denoiser for r in self.runs]}); pick one from recording.runs.")
        return runs[0]

    def _listen(self, denoiser: str, generation: Generation, branch: str, step: int, feature: torch.Tensor) -> None:
        if threading.get_ident() != self._thread:
            return
        run = next((r for r in reversed(self.runs) if r.generation is generation), None)
        if run is None:
            run = RecordedRun(denoiser, generation.num_steps, generation=generation)
            self.runs.append(run)
        run.features.setdefault(branch, {})[step] = self._keep(feature)


def cpu_copy(feature: torch.Tensor) -> torch.Tensor:
    """The feature detached, as a copy in host memory: what ``recording`` keeps by default."""
    return feature.detach().to("cpu", copy=True)


@contextlib.contextmanager
def recording(target: Any, *, keep: Callable[[torch.Tensor], Any] = cpu_copy) -> Iterator[Recording]:
    """Collect the features the compute steps of ``target``'s denoisers record on this thread, for the
    length of the ``with`` block; calls from other threads are not recorded.

    ``target`` is a pipeline or denoiser with Spectrum enabled. ``keep`` makes what is kept of each feature
    (a tensor the network made, possibly on the accelerator): by default a detached copy in host memory;
    pass e.g. ``lambda f: f.detach().clone()`` to keep it on the device, or a function that keeps a part.

    Raises ValueError if Spectrum is not enabled on ``target``.
    """
    hooks = [hook for _, module in find_denoisers(target, "recording") if (hook := denoiser_hook(module)) is not None]
    if not hooks:
        raise ValueError(f"Spectrum is not enabled on {type(target).__name__}; call enable_spectrum first.")
    recorded = Recording(keep)
    with contextlib.ExitStack() as listening:
        for hook in hooks:
            listening.enter_context(hook.listen(functools.partial(recorded._listen, hook.denoiser_name)))
        yield recorded
