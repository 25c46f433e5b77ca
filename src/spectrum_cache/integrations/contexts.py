"""Which CFG branch a denoiser call belongs to, and the step fields its loop passed (diffusers'
``cache_context``), per thread.

diffusers finds every ``StateManager`` among a stateful hook's attributes and hands it the
``CacheContext`` a loop enters (``with transformer.cache_context("cond", step_index=i, ...)``).
Pipelines that batch cond and uncond into one call (SDXL) set none: their calls are ``default``.
diffusers' guiders name their predictions ``pred_cond`` / ``pred_uncond``; they are the ``cond`` /
``uncond`` branches.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from diffusers.hooks.hooks import BaseState, StateManager

DEFAULT_BRANCH = "default"
# Branch names that mean the conditional and unconditional CFG predictions.
BRANCH_ALIASES = {"pred_cond": "cond", "pred_uncond": "uncond"}
# Branches whose calls may stack uncond and cond along the batch (diffusers names such a call
# "cond_uncond"); a pipeline's other named calls (LTX-2's "uncond_stg", "uncond_modality") hold one branch.
BATCHED_CFG_BRANCHES = (DEFAULT_BRANCH, "cond_uncond")


def branch_name(name: str) -> str:
    """The branch a context or guider prediction name stands for."""
    return BRANCH_ALIASES.get(name, name)


@dataclass(frozen=True)
class StepFields:
    """Where the loop says it is: ``CacheContext.step_index`` of ``num_inference_steps``."""

    step_index: int
    num_inference_steps: int


class BranchContexts(StateManager):
    """The ``cache_context`` a thread is in (diffusers sets it; see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(BaseState)
        self._local = threading.local()

    def set_context(self, context: Any) -> None:
        self._local.context = context

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self._local.context = None

    def has_context(self) -> bool:
        return getattr(self._local, "context", None) is not None

    def name(self) -> str:
        context = getattr(self._local, "context", None)
        return branch_name(context.name) if context is not None else DEFAULT_BRANCH

    def step_fields(self) -> StepFields | None:
        """The context's step fields, where the loop passed both ``step_index`` and ``num_inference_steps``."""
        context = getattr(self._local, "context", None)
        index = getattr(context, "step_index", None)
        total = getattr(context, "num_inference_steps", None)
        if isinstance(index, int) and isinstance(total, int) and total > 0:
            return StepFields(index, total)
        return None
