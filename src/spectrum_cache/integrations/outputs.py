"""What Spectrum reads off a denoiser call's inputs, and how it forecasts a whole output.

``forecast_output`` mode records the denoiser's output. Outputs come as a tensor, a tuple, a diffusers
``BaseOutput``, or, for Z-Image, a tuple holding a list of per-sample tensors: ``split_output`` turns any
of these into one feature tensor plus a layout, and ``rebuild_output`` puts a forecast back into that
layout.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.utils import BaseOutput


def input_key(arguments: dict[str, Any]) -> tuple:
    """Shapes and dtypes of the call's tensors (also inside lists, as Z-Image passes them)."""

    def shapes(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return tuple(shapes(v) for v in value)
        return None

    return tuple((name, key) for name, value in arguments.items() if (key := shapes(value)) is not None)


def split_output(output: Any) -> tuple[torch.Tensor, Any] | None:
    """The denoiser output's tensors as one feature (a single tensor as it is, several flattened and
    joined), and the layout to rebuild an output of the same kind around a forecast; None if the output
    holds anything else than tensors, None and numbers, or tensors of several dtypes or devices."""
    leaves: list[torch.Tensor] = []
    try:
        layout = _flatten(output, leaves)
    except TypeError:
        return None
    if not leaves or len({(t.dtype, t.device) for t in leaves}) > 1:
        return None
    feature = leaves[0] if len(leaves) == 1 else torch.cat([t.reshape(-1) for t in leaves])
    return feature, layout


def _flatten(value: Any, leaves: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        leaves.append(value)
        return ("tensor", tuple(value.shape))
    if isinstance(value, BaseOutput):
        return ("output", type(value), {k: _flatten(v, leaves) for k, v in value.items()})
    if isinstance(value, (tuple, list)):
        return ("sequence", type(value), [_flatten(v, leaves) for v in value])
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("constant", value)
    raise TypeError(type(value).__name__)


def rebuild_output(layout: Any, feature: torch.Tensor) -> Any:
    if layout[0] == "tensor":  # a single tensor: the feature itself
        return feature
    flat = feature.reshape(-1)
    offset = [0]

    def build(node: Any) -> Any:
        kind = node[0]
        if kind == "tensor":
            numel = 1
            for size in node[1]:
                numel *= size
            out = flat[offset[0] : offset[0] + numel].reshape(node[1])
            offset[0] += numel
            return out
        if kind == "output":
            return node[1](**{k: build(v) for k, v in node[2].items()})
        if kind == "sequence":
            return node[1](build(v) for v in node[2])
        return node[1]

    return build(layout)
