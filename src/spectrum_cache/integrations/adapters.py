"""Everything Spectrum knows about particular diffusers models, as data.

A denoiser needs three facts: which modules are skipped on forecast steps (its blocks), which module's
first input is the forecast feature (its output head), and which forward argument carries the
timestep. Most diffusers DiTs follow one layout (``*_blocks`` / ``layers`` ModuleLists and a
``norm_out`` head) and need no entry: ``resolve_adapter`` derives it. The table below lists only the
families that differ.

A pipeline may also run a denoiser on only some of its scheduler's timesteps; ``steps_run_by`` holds
those rules (Wan2.2's two experts, SDXL's ``denoising_end``).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class DenoiserAdapter:
    """Where one denoiser family keeps what Spectrum touches.

    Attributes:
        block_paths: module paths skipped on forecast steps. A ModuleList stands for each of its
            children. ``None`` means every top-level ModuleList whose name matches ``BLOCK_LIST_NAMES``;
            a callable gets the model and returns the paths (HiDream names each of its double-stream blocks).
        head_path: the module whose first input is the forecast feature h_s (the output head's input,
            e.g. FLUX's ``norm_out``). ``None`` means the first of ``HEAD_NAMES`` the model has.
        timestep_arg: the forward argument holding the timestep; ``None`` means the first of
            ``TIMESTEP_ARGS`` in the forward signature.
        extra_heads: further output heads the blocks' outputs reach (LTX-2's audio stream has a head of
            its own): the forecast feature is the inputs of every head called, flattened and joined, so one
            forecast serves them all (the fit is per element). A head the forward leaves out on a call
            (video-only LTX-2) is left out of that trajectory's feature.
        constant_inputs: forward arguments that match the per-step extra-input rule
            (``EXTRA_INPUT_ARGS``) but are a conditioning that only the skipped blocks read and that
            does not change from step to step (WanVACE's ``control_hidden_states``): a call with them
            may still forecast.
        head_input_upcast: the forward upcasts the blocks' output to float32 before the head (Wan:
            ``norm_out(hidden_states.float())``), so the head's input holds values of the model's dtype:
            the forecaster holds its features in that dtype (checked exact on each trajectory's first
            record), 24 instead of 28 bytes per element for the full fit in a bfloat16 model.
    """

    block_paths: tuple[str, ...] | Callable[[nn.Module], tuple[str, ...]] | None = None
    head_path: str | Callable[[nn.Module], str] | None = None
    extra_heads: tuple[str, ...] = ()
    timestep_arg: str | None = None
    constant_inputs: tuple[str, ...] = ()
    head_input_upcast: bool = False


# Top-level ModuleLists (or ModuleDicts of them) whose outputs only flow towards the head: the transformer
# blocks, and the refiners some families run on the tokens before them (Lumina2, Z-Image; MiniMax H3's is a single
# module); and a UNet's mid_block, a single block between its down and up lists. A single block gets a stand-in
# (STAND_INS says why each is safe).
BLOCK_LIST_NAMES = re.compile(r"(\w+_)?blocks|layers|\w+_refiner|mid_block")
# Output heads, by the name the forward gives them. Each later name is, in every diffusers 0.42 denoiser
# that has none of the earlier ones, the first module the forward applies to the last block's output
# (ERNIE-Image's final_norm; Kandinsky 5 and 6's out_layer; StableAudio, StableAudio 3 and MiniMax Music 3's
# proj_out, before their postprocess_conv): tests/denoisers.py builds each.
HEAD_NAMES = ("norm_out", "conv_norm_out", "final_layer", "final_norm", "out_layer", "proj_out")
TIMESTEP_ARGS = ("timestep", "timesteps", "t")
# Forward arguments that carry per-step inputs from outside the denoiser (ControlNet, VACE, T2I
# adapters). Skipping blocks would drop them, so a call that has any runs the network in full.
EXTRA_INPUT_ARGS = re.compile(r".*control.*|.*additional_residual.*|.*adapter_residual.*")


def _count(model: nn.Module, name: str) -> int:
    """How many blocks the model's ModuleList ``name`` holds."""
    blocks = getattr(model, name)
    assert isinstance(blocks, nn.ModuleList)
    return len(blocks)


def _z_image_head(model: Any) -> str:
    key = f"{model.config.all_patch_size[0]}-{model.config.all_f_patch_size[0]}"
    return f"all_final_layer.{key}"


ADAPTERS: dict[str, DenoiserAdapter] = {
    # SD/SDXL UNets: the down, mid and up blocks; the feature is the last up-block's output.
    "UNet2DConditionModel": DenoiserAdapter(
        block_paths=("down_blocks", "mid_block", "up_blocks"), head_path="conv_norm_out"
    ),
    # Z-Image keeps one output layer per patch size; the first configured one is used.
    "ZImageTransformer2DModel": DenoiserAdapter(head_path=_z_image_head),
    # Wan upcasts its blocks' output for the head (SkyReels-V2 and Wan Animate likewise).
    "WanTransformer3DModel": DenoiserAdapter(head_input_upcast=True),
    "SkyReelsV2Transformer3DModel": DenoiserAdapter(head_input_upcast=True),
    "WanAnimateTransformer3DModel": DenoiserAdapter(head_input_upcast=True),
    # WanVACE: the control latents (and their per-layer scales) are one conditioning for the whole
    # generation (WanVACEPipeline computes them before the loop); only vace_patch_embedding and the
    # vace_blocks read them, and the VACE blocks' hints reach only the main blocks, so a forecast step
    # skips both block lists and may forecast a call that has them.
    "WanVACETransformer3DModel": DenoiserAdapter(
        constant_inputs=("control_hidden_states", "control_hidden_states_scale"),
        head_input_upcast=True,
    ),
    # HiDream's double-stream blocks are skipped one by one, as single blocks with stand-ins (STAND_INS says
    # why), not as a list; the single-stream list is skipped as usual.
    "HiDreamImageTransformer2DModel": DenoiserAdapter(
        block_paths=lambda model: (*(f"double_stream_blocks.{i}" for i in range(_count(model, "double_stream_blocks"))),
                                   "single_stream_blocks"),
    ),
    # Audio-video models: the audio stream's head reads the same blocks' output (a video-only call leaves it out).
    "LTX2VideoTransformer3DModel": DenoiserAdapter(extra_heads=("audio_norm_out",)),
    "Kandinsky6Transformer3DModel": DenoiserAdapter(extra_heads=("audio_out_layer",)),
    # Wan-Animate 2 names its output head ``head``.
    "WanAnimate2Transformer3DModel": DenoiserAdapter(head_path="head"),
    # Cosmos 3 Omni runs the understanding (text) and generation (vision, sound, action) streams through its
    # layers and norms each (norm, norm_moe_gen); every noisy token is in the generation stream, whose norm is
    # the head of all three of its outputs. Its timestep is the vision tokens'.
    "Cosmos3OmniTransformer": DenoiserAdapter(head_path="norm_moe_gen", timestep_arg="vision_timesteps"),
    # Spectrogram diffusion's decoder: T5 layers in ``decoders``, then decoder_norm and spec_out.
    "T5FilmDecoder": DenoiserAdapter(block_paths=("decoders",), head_path="decoder_norm",
                                     timestep_arg="decoder_noise_time"),
    # La-Proteina's denoiser: a backbone (bb_ca) and a local-latent trajectory, each with its time. Its four outputs
    # are read from the last layer's output as it is, by five modules: the backbone head ca_linear, then
    # local_latents_linear, sequence_readout and the insertion projections (query and key), each called on that
    # tensor. The pair updates run inside the layer loop only, so skipping transformer_layers skips them too.
    "RFD4ProteinaTransformer": DenoiserAdapter(
        block_paths=("transformer_layers",), head_path="ca_linear",
        extra_heads=("local_latents_linear", "sequence_readout", "insertion_q_proj", "insertion_k_proj"),
        timestep_arg="bb_ca_time"),
    # UNet1DModel's head, where it has one, is out_block (Dance Diffusion has none: its last up block writes the
    # sample, and it is refused).
    "UNet1DModel": DenoiserAdapter(head_path="out_block"),
    # Stable Cascade iterates zip(down_blocks, down_downscalers, ...) and reads level_outputs[0] after: its
    # outer lists must run, so the skipped lists are each level's blocks; the timestep is a ratio.
    "StableCascadeUNet": DenoiserAdapter(
        block_paths=lambda model: (*(f"down_blocks.{i}" for i in range(_count(model, "down_blocks"))),
                                   *(f"up_blocks.{i}" for i in range(_count(model, "up_blocks")))),
        head_path="clf", timestep_arg="timestep_ratio"),
}

# Stand-ins: the one place that says why each is safe. A skipped block list is iterated as empty, but a
# single skipped block (not a list) is called by the forward, so it gets a StandInHook (skipping.py): on a
# forecast step it returns fresh, uninitialised tensors laid out as its output on the trajectory's last
# compute step. That is safe only where none of its output's values reaches the denoiser's output: each may
# feed only skipped blocks and the head's input, which the forecast replaces, and the forward may read no
# more than their shapes. Every denoiser class of diffusers 0.42.1 whose adapter resolves to a single
# skipped block is here, with the reason from its forward (tests/test_denoisers.py checks the list is
# complete, and the family tests fill the fresh tensors with NaN). Input embedders, the time embedding and
# everything else outside the blocks run as the model wrote them.
_UNET_MID = ("mid_block: its output goes only to the up blocks (skipped), so the head's input on a forecast step "
             "is the mid block's output, replaced by the forecast. A ControlNet or T2I-Adapter residual added to it "
             "in between needs only its shape.")
STAND_INS: dict[str, str] = {
    "UNet2DConditionModel": _UNET_MID,
    "DreamLiteUNetModel": _UNET_MID,  # a UNet2DConditionModel, with its forward
    "UNet2DModel": _UNET_MID,
    "UNet3DConditionModel": _UNET_MID,
    "UNetMotionModel": _UNET_MID,
    "UNetSpatioTemporalConditionModel": _UNET_MID,
    "I2VGenXLUNet": _UNET_MID,
    # HiDream sets cur_llama31_encoder_hidden_states inside its double-stream loop and reads it after the loop
    # when the latent is not square (hidden_states_masks), so that loop must run.
    "HiDreamImageTransformer2DModel": (
        "double_stream_blocks.i (the adapter's block_paths): each block's two outputs feed only the next "
        "double-stream block (skipped) and, joined, the single-stream blocks (skipped); the image tokens of "
        "that join are the head's input, replaced. The forward reads their shapes only (the join, the "
        "image-token count)."),
    "MiniMaxH3Transformer3DModel": (
        "token_refiner (BLOCK_LIST_NAMES' *_refiner): its text tokens are scattered into the packed sequence "
        "that only the transformer blocks (skipped) read; the head's input, the blocks' output, is replaced. "
        "The forward reads its shape and dtype only (the packed buffer's)."),
}

# ControlNets: per denoiser class, the forward arguments that carry a ControlNet's residuals. Its forward
# reads them only inside the skipped blocks (FLUX's and SD3's per-block samples) or adds them to outputs
# that only skipped blocks read (the UNet's down-block skip connections and the stand-in mid block's
# output, which go to the up blocks), so on a forecast step they never reach the output head.
CONTROLNET_RESIDUALS: dict[str, tuple[str, ...]] = {
    "UNet2DConditionModel": ("down_block_additional_residuals", "mid_block_additional_residual"),
    "FluxTransformer2DModel": ("controlnet_block_samples", "controlnet_single_block_samples"),
    "SD3Transformer2DModel": ("block_controlnet_hidden_states",),
}
# The ControlNet classes whose whole output is those residuals (the multi-ControlNet wrappers sum their
# nets' residuals inside their forward), as the pipelines of those denoisers hold them in ``controlnet``:
# on a forecast step of the denoiser they are not run (integrations/controlnet.py).
CONTROLNET_CLASSES: tuple[str, ...] = (
    "ControlNetModel", "MultiControlNetModel", "ControlNetUnionModel", "MultiControlNetUnionModel",
    "FluxControlNetModel", "FluxMultiControlNetModel", "SD3ControlNetModel", "SD3MultiControlNetModel",
)
CONTROLNET_COMPONENT = "controlnet"

@dataclass(frozen=True)
class GuidanceLayout:
    """How a pipeline family runs classifier-free guidance, for pairing the branches' forecasts.

    Attributes:
        kind: ``"batched"``, both branches in one call stacked along the batch, or ``"calls"``, two
            denoiser calls per step without ``cache_context`` names. (Pipelines that call in
            ``cache_context("cond")`` / ``("uncond")`` need no entry: the names say it.)
        cond_first: the cond branch is the first half of the batch, or the first of the two calls.
    """

    kind: str
    cond_first: bool


# Pipeline class names (regular expressions) and how they run CFG, read from their __call__ in diffusers
# 0.42: the batched ones concatenate [negative, positive] prompt embeddings (Z-Image: positive first).
GUIDANCE_LAYOUTS: tuple[tuple[re.Pattern, GuidanceLayout], ...] = (
    (re.compile(r"StableDiffusion3\w*Pipeline|StableDiffusionXL\w*Pipeline|PixArt\w*Pipeline|Sana\w*Pipeline"
                r"|CogVideoX\w*Pipeline|LTX\w*Pipeline|Mochi\w*Pipeline|HiDreamImage\w*Pipeline|StableAudioPipeline"),
     GuidanceLayout("batched", cond_first=False)),
    (re.compile(r"ZImage\w*Pipeline"), GuidanceLayout("batched", cond_first=True)),
    (re.compile(r"Chroma\w*Pipeline|Lumina2\w*Pipeline|Cosmos\w*Pipeline|Krea2\w*Pipeline|Kandinsky5\w*Pipeline"),
     GuidanceLayout("calls", cond_first=True)),
)


def guidance_layout(pipeline: object) -> GuidanceLayout | None:
    """The CFG layout of ``pipeline``'s family, or None where the table does not know it."""
    name = type(pipeline).__name__
    return next((layout for pattern, layout in GUIDANCE_LAYOUTS if pattern.fullmatch(name)), None)


# Pipeline components that are denoisers, in the order pipelines use them.
DENOISER_COMPONENTS = ("transformer", "transformer_2", "unet", "unconditional_transformer")  # the last: Ideogram 4's CFG


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter applied to one model instance.

    ``block_slots`` are (parent module, child name) pairs: on a forecast step a block list is iterated
    as empty and a single block's stand-in returns fresh tensors laid out as its last compute step's
    output (integrations/skipping.py; ``STAND_INS`` says why each is safe), so the model's own forward
    runs no block at all. Nothing is taken out of the model.
    """

    block_slots: tuple[tuple[nn.Module, str], ...]
    head: nn.Module
    timestep_arg: str
    constant_inputs: tuple[str, ...] = ()
    extra_heads: tuple[nn.Module, ...] = ()  # further heads whose inputs the blocks produce too
    head_input_upcast: bool = False  # the adapter's flag: the head's input is the blocks' output upcast

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        """Every output head, the main one first: the forecast feature is their inputs together."""
        return (self.head, *self.extra_heads)

    @property
    def block_lists(self) -> tuple[nn.ModuleList, ...]:
        """The skipped block lists."""
        lists = (parent._modules[name] for parent, name in self.block_slots)
        return tuple(m for m in lists if isinstance(m, nn.ModuleList))

    @property
    def stand_in_modules(self) -> tuple[nn.Module, ...]:
        """The skipped blocks that are not lists: each gets a stand-in on forecast steps (STAND_INS)."""
        singles = (parent._modules[name] for parent, name in self.block_slots)
        return tuple(m for m in singles if m is not None and not isinstance(m, nn.ModuleList))

    def skipped_modules(self) -> tuple[nn.Module, ...]:
        """Every module a forecast step skips, with everything inside it."""
        roots = [*(b for blocks in self.block_lists for b in blocks._modules.values()), *self.stand_in_modules]
        return tuple(m for root in roots for m in root.modules())

    @property
    def blocks(self) -> tuple[nn.Module, ...]:
        """Every skipped block (the children of the block ModuleLists, or the modules themselves)."""
        out: list[nn.Module] = []
        for parent, name in self.block_slots:
            module = parent._modules[name]
            if isinstance(module, nn.ModuleList):
                out.extend(m for m in module._modules.values() if m is not None)
            elif module is not None:
                out.append(module)
        return tuple(out)


class UnsupportedModelError(ValueError):
    """The model's layout is unknown, or it is not a denoiser; Spectrum will not silently do nothing."""


def resolve_adapter(model: nn.Module) -> ResolvedAdapter:
    """The blocks, head and timestep argument of ``model``, from the table or the common layout."""
    name = type(model).__name__
    adapter = ADAPTERS.get(name, DenoiserAdapter())
    hint = (
        (f"{name} does not have the layout its Spectrum adapter names; " if name in ADAPTERS else
         f"{name} has no Spectrum adapter and does not follow the usual diffusers layout "
         "(block ModuleLists and a norm_out head); add a DenoiserAdapter to "
         "spectrum_cache.integrations.adapters.ADAPTERS, or ")
        + "pass SpectrumConfig(forecast_output=True) to forecast the model's output instead"
    )
    modules = dict(model.named_modules())

    if adapter.block_paths is None:
        # A ModuleDict of that name holds one block list per stream (FLUX.3's mode_blocks: image, image_cond).
        block_paths = tuple(
            path
            for child_name, child in model.named_children()
            if BLOCK_LIST_NAMES.fullmatch(child_name)
            for path in ([f"{child_name}.{key}" for key, value in child.items() if isinstance(value, nn.ModuleList)]
                         if isinstance(child, nn.ModuleDict) else [child_name])
        )
    else:
        block_paths = adapter.block_paths(model) if callable(adapter.block_paths) else adapter.block_paths
    slots = []
    for path in block_paths:
        module = modules.get(path)
        if module is None:
            raise UnsupportedModelError(f"{hint}: it has no module {path!r}.")
        if isinstance(module, nn.ModuleList) and len(module) == 0:
            continue
        parent_path, _, child = path.rpartition(".")
        slots.append((modules[parent_path], child))
    if not slots:
        raise UnsupportedModelError(f"{hint}: no transformer blocks found.")

    head_path = adapter.head_path(model) if callable(adapter.head_path) else adapter.head_path
    if head_path is None:
        head_path = next((h for h in HEAD_NAMES if isinstance(modules.get(h), nn.Module)), None)
    if head_path is None or not isinstance(modules.get(head_path), nn.Module):
        raise UnsupportedModelError(f"{hint}: no output head found.")

    extra_heads = []
    for path in adapter.extra_heads:
        if not isinstance(modules.get(path), nn.Module):
            raise UnsupportedModelError(f"{hint}: it has no head {path!r}.")
        extra_heads.append(modules[path])
    return ResolvedAdapter(tuple(slots), modules[head_path], timestep_argument(model), adapter.constant_inputs,
                           tuple(extra_heads), adapter.head_input_upcast)


def timestep_argument(model: nn.Module) -> str:
    """The forward argument holding the timestep; a model without one is not a denoiser."""
    adapter = ADAPTERS.get(type(model).__name__, DenoiserAdapter())
    parameters = inspect.signature(model.forward).parameters
    found = adapter.timestep_arg or next((a for a in TIMESTEP_ARGS if a in parameters), None)
    if found is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a denoiser: its forward takes no timestep argument "
            f"(Spectrum looks for {', '.join(TIMESTEP_ARGS)}). Pass a diffusers pipeline, or its transformer or unet."
        )
    return found


@dataclass(frozen=True)
class TimestepRange:
    """The timesteps t with ``low <= t < high`` (a denoiser runs only these in a pipeline call)."""

    low: float = -math.inf
    high: float = math.inf

    def __contains__(self, t: float) -> bool:
        return self.low <= t < self.high


def steps_run_by(pipeline: object, component: str | None) -> TimestepRange:
    """Which of the scheduler's timesteps ``pipeline``'s current call runs on its ``component``.

    - Wan2.2 hands steps to two experts: ``transformer`` for t >= boundary_ratio * num_train_timesteps,
      ``transformer_2`` below.
    - SDXL pipelines stop at ``denoising_end`` (a fraction of num_train_timesteps): they run the
      timesteps t >= round(T - denoising_end * T) and stop there, leaving the rest to a refiner.
    """
    low, high = -math.inf, math.inf
    scheduler_config = getattr(getattr(pipeline, "scheduler", None), "config", {})
    train_steps = scheduler_config.get("num_train_timesteps", 1000) if hasattr(scheduler_config, "get") else 1000
    config = getattr(pipeline, "config", {})
    ratio = config.get("boundary_ratio") if hasattr(config, "get") else None
    if ratio is not None and getattr(pipeline, "transformer_2", None) is not None:
        boundary = ratio * train_steps
        if component == "transformer":
            low = boundary
        elif component == "transformer_2":
            high = boundary
    # The SDXL pipelines say the call's denoising_end in their denoising_end property.
    try:
        denoising_end = getattr(pipeline, "denoising_end", None)
    except Exception:  # the property reads state the pipeline sets in its call
        denoising_end = None
    if isinstance(denoising_end, float) and 0 < denoising_end < 1:
        low = max(low, round(train_steps - denoising_end * train_steps))
    return TimestepRange(low, high)


class ExtraInputs:
    """Finds a call's per-step extra inputs (ControlNet residuals and the like), leaving out the adapter's
    ``constant`` inputs; each argument name is matched once."""

    def __init__(self, constant: tuple[str, ...] = ()) -> None:
        self._constant = constant
        self._is_extra: dict[str, bool] = {}

    def __call__(self, arguments: dict[str, object]) -> list[str]:
        """Names of the extra inputs present in a call (a tensor, or a non-empty container)."""
        found = []
        for name, value in arguments.items():
            extra = self._is_extra.get(name)
            if extra is None:
                extra = self._is_extra[name] = bool(EXTRA_INPUT_ARGS.fullmatch(name)) and name not in self._constant
            if extra and (isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple, dict)) and len(value) > 0)):
                found.append(name)
        return found
