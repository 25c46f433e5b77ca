"""A module call's arguments by name, bound once per call without ``inspect``'s per-call cost.

``Signature.bind_partial`` takes tens of microseconds per call; a denoiser call needs its arguments by name on
every step (the timestep, the extra inputs, the input shapes). ``Binder`` reads the forward's signature once and
maps positional arguments to their names, keyword arguments as given; what a ``**kwargs`` parameter collects is
flattened in by name, in the signature's order first.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Binder:
    """Binds calls of ``type(module).forward`` (without ``self``) to a dict of argument names."""

    def __init__(self, module: torch.nn.Module) -> None:
        signature = inspect.signature(type(module).forward)
        parameters = list(signature.parameters.values())[1:]
        self._signature = signature.replace(parameters=parameters)
        self._positional = tuple(p.name for p in parameters if p.kind in _POSITIONAL)
        self._names = tuple(p.name for p in parameters if p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                          inspect.Parameter.VAR_KEYWORD))

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self._positional) or any(name in kwargs for name in self._positional[:len(args)]):
            return self._slow(args, kwargs)  # *args, or a clash that the forward will refuse
        given = dict(zip(self._positional, args))
        given.update(kwargs)
        bound = {name: given.pop(name) for name in self._names if name in given}
        bound.update(given)  # what **kwargs collects
        return bound

    def _slow(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        for name, parameter in self._signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
                bound = {**bound, **bound.pop(name)}
        return bound
