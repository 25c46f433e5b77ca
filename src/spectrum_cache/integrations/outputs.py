"""What Spectrum reads off a denoiser call's inputs, and how it forecasts a whole output.

``forecast_output`` mode records the denoiser's output. Outputs come as a tensor, a tuple, a diffusers
``BaseOutput``, or, for Z-Image, a tuple holding a list of per-sample tensors: ``split_output`` turns any
of these into one feature tensor plus a layout (torch's pytree spec of the output), and ``rebuild_output``
puts a forecast back into that layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten


def input_key(arguments: dict[str, Any]) -> tuple:
    """Shapes and dtypes of the call's tensors (also inside lists, as Z-Image passes them)."""

    def shapes(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return tuple(shapes(v) for v in value)
        return None

    return tuple((name, key) for name, value in arguments.items() if (key := shapes(value)) is not None)


def split_output(output: Any) -> tuple[torch.Tensor, OutputLayout] | None:
    """The denoiser output's tensors as one feature (a single tensor as it is, several flattened and
    joined), and the layout to rebuild an output of the same kind around a forecast; None if the output
    holds anything else than tensors, None and numbers, or tensors of several dtypes or devices."""
    leaves, spec = tree_flatten(output, is_leaf=_not_a_container)
    if not all(leaf is None or isinstance(leaf, (torch.Tensor, *_CONSTANTS)) for leaf in leaves):
        return None
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    if not tensors or len({(t.dtype, t.device) for t in tensors}) > 1:
        return None
    feature = tensors[0] if len(tensors) == 1 else torch.cat([t.reshape(-1) for t in tensors])
    layout = OutputLayout(spec, tuple(leaf.shape if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves))
    return feature, layout


def rebuild_output(layout: OutputLayout, feature: torch.Tensor) -> Any:
    """An output laid out as ``layout`` says, its tensors cut from ``feature`` (``split_output``'s inverse)."""
    if layout.spec.is_leaf():  # a single tensor: the feature itself
        return feature
    flat = feature.reshape(-1)
    leaves, offset = [], 0
    for leaf in layout.leaves:
        if isinstance(leaf, torch.Size):
            leaves.append(flat[offset : offset + leaf.numel()].reshape(leaf))
            offset += leaf.numel()
        else:
            leaves.append(leaf)
    return tree_unflatten(leaves, layout.spec)


@dataclass(frozen=True)
class OutputLayout:
    """How ``split_output`` took an output apart: its structure (a pytree spec) and, per leaf in order, the
    tensor's shape (a ``torch.Size``) or the constant itself."""

    spec: TreeSpec
    leaves: tuple


# What an output may hold besides tensors and None, kept in the layout as it is.
_CONSTANTS = (bool, int, float, str)


def _not_a_container(node: Any) -> bool:
    """What ``split_output`` leaves whole: all but tuples and lists (namedtuples too) and diffusers'
    ``BaseOutput`` (which diffusers registers with torch's pytree). An output holding another container (a
    dict) is not split."""
    return not isinstance(node, (tuple, list, BaseOutput))
