"""A module call's arguments by name, for the hooks that read them (the denoiser's and the ControlNet's)."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def forward_signature(module: torch.nn.Module) -> inspect.Signature:
    """The signature of ``module``'s class's ``forward``, without ``self``: what a hook's ``args`` and
    ``kwargs`` bind to (a hook sees the call's arguments, not the instance)."""
    signature = inspect.signature(type(module).forward)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def bind_arguments(signature: inspect.Signature, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (those given only: defaults are not filled in), with the entries
    of a ``**kwargs`` parameter among them rather than under its name."""
    bound = dict(signature.bind_partial(*args, **kwargs).arguments)
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
            bound.update(bound.pop(name))
    return bound
