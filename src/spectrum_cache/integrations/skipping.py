"""How a forecast step skips modules while the module tree stays whole.

On a forecast step the denoiser's own forward runs with its blocks skipped, so only what lies
outside them (input embedders, time embedding, output head) does any work, and the head's input is
swapped for the forecast. Nothing
is taken out of the model: other threads, ``state_dict()``, ``.to()``, offload hooks and other
libraries' hooks see the real modules during a call as after it. What does the skipping:

- A block list (a ``ModuleList``) gets a gated ``__iter__``: while its ``SkipGate`` is shut for the
  thread that is forecasting, iterating it yields nothing, so the forward's ``for block in blocks``
  runs no block. Indexing (``blocks[0]``), ``len`` and every ``nn.Module`` walk are unchanged. The
  list's class becomes a subclass of its own that adds only this method, undone by ``disable_spectrum``.
- A single block (a UNet's ``mid_block``, HiDream's double-stream blocks, MiniMax H3's ``token_refiner``)
  gets a ``StandInHook``: on a forecast step it returns fresh, uninitialised tensors of the shapes,
  dtypes and devices it gave on the trajectory's last compute step (``Blank``), which is what the forward
  expects from it whatever the model's widths. Its values never reach the output: they feed only skipped
  blocks and the head's input, which the forecast replaces. adapters.STAND_INS says so for each, from its
  forward; tests/test_families.py and tests/test_denoisers.py check the outputs with the blanks poisoned.
  Nothing of the output is kept between steps, only its layout.

Everything else in the forward runs as the model wrote it: the input embedders (patch, text, rotary and
pooled-text embeddings), the time embedding and the head. They are a small part of a pass (about 1.5e-4
of its FLOPs at FLUX.1-dev size; docs/speed.md), and running them leaves no table of embedders to get right.

torch.compile. The gate is two plain attributes; dynamo guards on them, so a compiled whole model has
one graph for compute steps and one for forecast steps. Under compilation the thread check is left
out (calls into one denoiser take turns, so the compiled call is the forecasting thread's).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks.hooks import ModelHook
from torch.utils._pytree import tree_map_only

from .compat import Unpicklable, hook_registry

_GATE_ATTR = "_spectrum_gate"


class SkipGate:
    """Shut while one thread runs a forecast step of one denoiser."""

    def __init__(self) -> None:
        self.shut = False
        self.thread: int | None = None

    def close(self) -> None:
        self.shut, self.thread = True, threading.get_ident()

    def open(self) -> None:
        self.shut, self.thread = False, None

    def skips(self) -> bool:
        """Whether the calling code is inside the forecast step."""
        return self.shut and (torch.compiler.is_compiling() or self.thread == threading.get_ident())


class CallSlot:
    """The denoiser call in flight, as the hooks inside the forward see it (written outside compiled code)."""

    def __init__(self, num_stand_ins: int = 0, num_heads: int = 1) -> None:
        self.num_stand_ins = num_stand_ins
        self.num_heads = num_heads
        # Calls of the denoiser hook in flight (set outside compiled code). A head that runs while none is
        # means the denoiser ran without Spectrum: another library replaced its forward (cache-dit does).
        self.in_call = 0
        self.on_bypass: Callable[[], None] | None = None
        self.clear()

    def clear(self) -> None:
        self.active = False  # this call records or forecasts
        self.prediction: torch.Tensor | None = None  # the (joined) feature forecast, on a forecast step
        # Per head: its input to use on a forecast step (None: this trajectory has none for it), and its
        # input as the network made it on a compute step.
        self.head_predictions: list[torch.Tensor | None] = [None] * self.num_heads
        self.features: list[torch.Tensor | None] = [None] * self.num_heads
        self.unforecast_head = False  # a forecast step called a head the forecast has no input for
        # Stand-ins' outputs, in call order: their blanks, taken on compute steps and made into fresh tensors
        # on forecast steps.
        self.stand_in_outputs: list[list[Any]] = [[] for _ in range(self.num_stand_ins)]
        self.stand_in_used: list[int] = [0] * self.num_stand_ins


if TYPE_CHECKING:  # statically a ModuleList (what it is mixed into): its super() calls are checked against it
    _Mixin = torch.nn.ModuleList
else:
    _Mixin = object


class _GatedIteration(_Mixin):
    """Mixed in before a block list's own class: iterating it yields nothing while its gate skips.

    Every view of the list iterates the same way: a slice (Motif Video runs ``blocks[: n - k]``, then
    ``blocks[-k:]``) is a new list of this class that shares the gate, and ``reversed`` is gated too.
    Indexing one block (``blocks[i]``) is not a view and runs it; no diffusers denoiser loops that way."""

    def _spectrum_skips(self) -> bool:
        gate = self.__dict__.get(_GATE_ATTR)
        return gate is not None and gate.skips()

    def __iter__(self) -> Iterator[torch.nn.Module]:
        return iter(()) if self._spectrum_skips() else super().__iter__()

    def __reversed__(self) -> Iterator[torch.nn.Module]:  # ModuleList has none: reversed() would index one by one
        return iter(()) if self._spectrum_skips() else reversed(list(self._modules.values()))

    def __getitem__(self, index: Any) -> Any:  # ModuleList's: a block for an int, a list for a slice
        item = super().__getitem__(index)
        if isinstance(index, slice) and _GATE_ATTR in self.__dict__:
            item.__dict__[_GATE_ATTR] = self.__dict__[_GATE_ATTR]
        return item

    # Pickling the list names the way out (its class is made at enable, so pickle could not find it by name);
    # deepcopy, which would go the same way, copies it as nn.Module's default does.
    __reduce_ex__ = Unpicklable.__reduce_ex__

    def __deepcopy__(self, memo: dict) -> torch.nn.Module:
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        return clone


def gate_block_list(blocks: torch.nn.ModuleList, gate: SkipGate) -> None:
    """Give ``blocks`` the gated ``__iter__`` (see the module docstring)."""
    own = type(blocks)
    if not issubclass(own, _GatedIteration):
        # A class per call, not a module-level cache: ModuleList subclasses are rare and this runs at enable.
        blocks.__class__ = type(own.__name__, (_GatedIteration, own), {"__module__": own.__module__,
                                                                        "__qualname__": own.__qualname__})
    blocks.__dict__[_GATE_ATTR] = gate


def ungate_block_list(blocks: torch.nn.Module) -> None:
    """Undo ``gate_block_list``: the list's own class again."""
    blocks.__dict__.pop(_GATE_ATTR, None)
    own = type(blocks)
    if issubclass(own, _GatedIteration):
        blocks.__class__ = next(c for c in own.__mro__[1:] if not issubclass(c, _GatedIteration))  # type: ignore[assignment]


class Blank:
    """Where a stand-in's output had a tensor whose values are never read: its layout, to make a fresh
    uninitialised tensor of on each forecast step instead of holding the tensor between steps."""

    __slots__ = ("shape", "dtype", "device")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.shape, self.dtype, self.device = tensor.shape, tensor.dtype, tensor.device

    def make(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)


def blanked(value: Any) -> Any:
    """``value`` with each tensor in it (in tuples, lists, dicts and other pytree containers) replaced by its
    ``Blank``."""
    return tree_map_only(torch.Tensor, Blank, value)


def unblanked(value: Any) -> Any:
    """``value`` with each ``Blank`` in it made into a fresh tensor (the inverse of ``blanked`` in layout)."""
    return tree_map_only(Blank, Blank.make, value)


class StandInHook(Unpicklable, ModelHook):
    """A skipped single block: on forecast steps it returns fresh tensors laid out as the output the block
    gave on the trajectory's last compute step; on compute steps it hands that layout over."""

    def __init__(self, gate: SkipGate, slot: CallSlot, index: int) -> None:
        super().__init__()
        self.gate, self.slot, self.index = gate, slot, index

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        slot, index = self.slot, self.index
        if self.gate.skips():
            kept, used = slot.stand_in_outputs[index], slot.stand_in_used[index]
            if used < len(kept):  # the module's n-th call of this step gets its n-th output
                slot.stand_in_used[index] = used + 1
                return unblanked(kept[used])
        forward = self.fn_ref.original_forward
        assert forward is not None  # set by diffusers when the hook was registered
        output = forward(*args, **kwargs)
        if slot.active and slot.prediction is None:
            # Only the layout, at once: holding the output to the end of the call would keep it alive
            # while the blocks run, past where the forward itself lets go of it.
            slot.stand_in_outputs[index].append(blanked(output))
        return output


class HeadHook(Unpicklable, ModelHook):
    """Hands the output head's input to the call slot on compute steps and replaces it on forecast
    steps. It runs inside a compiled model: it only reads and writes the slot."""

    def __init__(self, slot: CallSlot, index: int = 0) -> None:
        super().__init__()
        self.slot = slot
        self.index = index  # which of the denoiser's heads (ResolvedAdapter.heads)

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        slot, index = self.slot, self.index
        if not slot.in_call and slot.on_bypass is not None:
            slot.on_bypass()
        if not slot.active or slot.features[index] is not None or not args or not isinstance(args[0], torch.Tensor):
            return args, kwargs
        slot.features[index] = args[0]  # seen (on a forecast step too: a head is replaced once per call)
        if slot.prediction is not None:
            replacement = slot.head_predictions[index]
            if replacement is None:
                slot.unforecast_head = True
                return args, kwargs
            return (replacement, *args[1:]), kwargs
        return args, kwargs


def join_heads(features: list[torch.Tensor | None]) -> tuple[torch.Tensor, tuple]:
    """The inputs of the heads a call ran as one feature, and the layout to split a forecast of it: a single
    head's input as it is; several flattened and joined per batch row (so a batched CFG call's halves stay
    its branches), in the first one's dtype. The fit is per element, so forecasting the join forecasts each."""
    seen = [(index, f) for index, f in enumerate(features) if f is not None]
    if len(seen) == 1:
        index, feature = seen[0]
        return feature, ((index, None, None),)
    dtype = seen[0][1].dtype
    layout = tuple((index, f.shape, f.dtype) for index, f in seen)
    rows = seen[0][1].shape[0] if seen[0][1].ndim else None
    if rows is not None and all(f.ndim and f.shape[0] == rows for _, f in seen):
        return torch.cat([f.reshape(rows, -1).to(dtype) for _, f in seen], dim=1), layout
    return torch.cat([f.reshape(-1).to(dtype) for _, f in seen]), layout  # heads of other batch sizes


def unjoin_heads(prediction: torch.Tensor, layout: tuple | None, num_heads: int) -> list[torch.Tensor | None]:
    """Each head's input from a forecast of the joined feature (None for a head the layout leaves out)."""
    out: list[torch.Tensor | None] = [None] * num_heads
    if layout is None or len(layout) == 1:
        out[layout[0][0] if layout else 0] = prediction
        return out
    flat = prediction.ndim == 1
    offset = 0
    for index, shape, dtype in layout:
        size = shape.numel() if flat else shape[1:].numel()
        part = prediction[offset:offset + size] if flat else prediction[:, offset:offset + size]
        out[index] = part.reshape(shape).to(dtype)
        offset += size
    return out


# Hooks of other libraries that manage memory, precision or sharding rather than observe the module:
# skipping the module skips their work too, exactly, and nobody needs telling. (diffusers' context
# parallelism splits and gathers the sequence with cp_input--- / cp_output--- hooks.)
_QUIET_HOOKS = ("layerwise_casting", "group_offloading", "lazy_prefetch", "cp_input---", "cp_output---")


def foreign_hooks(module: torch.nn.Module, own: tuple[str, ...]) -> list[str]:
    """What else is hooked onto ``module`` itself: torch forward (pre-)hooks, and diffusers registry
    hooks other than ``own`` and memory managers; accelerate's offload hook is not counted."""
    found = []
    for kind in ("_forward_pre_hooks", "_forward_hooks"):
        for hook in getattr(module, kind, {}).values():
            found.append(getattr(hook, "__qualname__", type(hook).__name__))
    registry = hook_registry(module)
    for name in (registry.hooks if registry is not None else ()):
        if name not in own and not any(name.startswith(q) for q in _QUIET_HOOKS):
            found.append(name)
    return found
