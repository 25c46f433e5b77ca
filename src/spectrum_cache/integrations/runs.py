"""Which scheduler run a thread is in: Spectrum's one piece of instrumentation outside the denoiser.

Every diffusers pipeline starts its denoising loop with ``scheduler.set_timesteps(...)``, in the thread
that runs the loop. Spectrum puts a ``RunWatch`` on the instance of each scheduler it knows (the enabled
pipelines', the one given to ``enable_spectrum`` or ``denoising_loop``) as that instance's
``set_timesteps``: it calls the scheduler's own method, then tells each listening denoiser hook that this
thread began a new run on that scheduler. That is how a call is placed without looking at its caller:
the thread's latest run names the scheduler, and through it the pipeline.

The watch changes nothing the scheduler does. It sits in the instance's ``__dict__`` (the class is
untouched, so other instances and other pipelines are not affected); ``unwatch`` removes it when the last
listener goes (``disable_spectrum``). A copy of a watched scheduler (``copy.deepcopy``, a copied pipeline)
gets its class's plain method.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any

_ATTR = "set_timesteps"


class RunWatch:
    """A scheduler instance's ``set_timesteps``: the scheduler's own, then each listener(scheduler)."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = weakref.ref(scheduler)
        # Listeners by key (a hook's id): a bound method of a hook that holds the watch weakly would keep the
        # hook alive, so listeners are weak methods.
        self._listeners: dict[int, weakref.WeakMethod] = {}

    def _own(self) -> Any:
        scheduler = self._scheduler()
        if scheduler is None:  # pragma: no cover - the watch lives in the scheduler's own __dict__
            raise RuntimeError("the scheduler of this set_timesteps no longer exists")
        return scheduler

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        scheduler = self._own()
        result = type(scheduler).set_timesteps(scheduler, *args, **kwargs)
        for key, listener in list(self._listeners.items()):
            method = listener()
            if method is not None:
                method(scheduler)
            else:  # its denoiser's hook is gone without disable_spectrum (the model was deleted)
                self._listeners.pop(key, None)
        if not self._listeners and vars(scheduler).get(_ATTR) is self:
            del vars(scheduler)[_ATTR]
        return result

    @property
    def __wrapped__(self) -> Any:
        """The scheduler's own method: ``inspect.signature`` follows it (pipelines ask which arguments
        ``set_timesteps`` takes)."""
        scheduler = self._own()
        return types.MethodType(type(scheduler).set_timesteps, scheduler)

    def __deepcopy__(self, memo: dict) -> Any:
        scheduler = self._own()
        copied = memo.get(id(scheduler), scheduler)
        return types.MethodType(type(copied).set_timesteps, copied)

    def __reduce__(self) -> Any:
        scheduler = self._own()
        return types.MethodType, (type(scheduler).set_timesteps, scheduler)  # unpickled as the plain method


def watch(scheduler: Any, key: int, listener: Callable[[Any], None]) -> None:
    """Call ``listener(scheduler)`` after each ``scheduler.set_timesteps`` (``key``: the listener's owner)."""
    run_watch = vars(scheduler).get(_ATTR)
    if not isinstance(run_watch, RunWatch):
        run_watch = RunWatch(scheduler)
        setattr(scheduler, _ATTR, run_watch)
    run_watch._listeners[key] = weakref.WeakMethod(listener)


def unwatch(scheduler: Any, key: int) -> None:
    """Stop ``key``'s listener; the last one gone, the scheduler has its class's method again."""
    run_watch = vars(scheduler).get(_ATTR)
    if not isinstance(run_watch, RunWatch):
        return
    run_watch._listeners.pop(key, None)
    if not run_watch._listeners:
        del vars(scheduler)[_ATTR]


def watched(scheduler: Any, key: int) -> bool:
    run_watch = vars(scheduler).get(_ATTR) if hasattr(scheduler, "__dict__") else None
    return isinstance(run_watch, RunWatch) and key in run_watch._listeners
