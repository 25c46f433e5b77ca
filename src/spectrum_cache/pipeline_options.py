"""The pipeline-call options that ``generate`` and ``calibrate`` share, and their checks before loading.

Both commands pass these to the pipeline's ``__call__`` only when given (the pipeline's default
otherwise), and check them against the pipeline's class before its weights load wherever the class is
known without loading (the embedded model, a local folder's model_index.json): a bad option then costs
a second, not the minutes of loading a large model.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from .errors import usage_error
from .loading import DTYPE_NAMES, OFFLOAD_MODES, is_embedded, pipeline_class_name, quiet_torchvision_notice
from .options import guidance_float, positive_int

# The pipeline call's keyword for each option that is passed only when given.
CALL_OPTIONS = {"guidance_scale": "--guidance-scale", "negative_prompt": "--negative-prompt",
                "true_cfg_scale": "--true-cfg-scale", "height": "--height", "width": "--width",
                "num_frames": "--num-frames"}
logger = logging.getLogger("spectrum_cache.cli")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--guidance-scale, --negative-prompt, --num-frames, --height, --width, --dtype, --offload."""
    parser.add_argument("--guidance-scale", type=guidance_float, default=None, metavar="G",
                        help="classifier-free guidance scale (default: the pipeline's)")
    parser.add_argument("--negative-prompt", default=None, metavar="TEXT",
                        help="what the unconditional branch of classifier-free guidance is given (default: the "
                             "pipeline's); FLUX.1 uses it only with --true-cfg-scale above 1")
    parser.add_argument("--num-frames", type=positive_int, default=None, metavar="N",
                        help="frames of a video (video pipelines only; default: the pipeline's, 81 for Wan)")
    parser.add_argument("--height", type=positive_int, default=None, metavar="PX",
                        help="image height in pixels (default: the pipeline's)")
    parser.add_argument("--width", type=positive_int, default=None, metavar="PX",
                        help="image width in pixels (default: the pipeline's)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                        help="load the weights in this dtype (default: bfloat16 for --model on an accelerator, "
                             "else float32)")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default=None,
                        help="keep the weights on the CPU and move them onto the accelerator as they run: model "
                             "(diffusers' enable_model_cpu_offload, whole components) or sequential "
                             "(enable_sequential_cpu_offload: least memory, slowest); needs an accelerator and "
                             "accelerate")


def call_options(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline call's keyword arguments the user set."""
    return {key: getattr(args, key) for key in CALL_OPTIONS if getattr(args, key, None) is not None}


def pipeline_class(model: str | None) -> type | None:
    """The pipeline class a model loads as, where it is known without loading (the embedded model, a
    local folder's model_index.json naming a diffusers class); None for a hub id."""
    if is_embedded(model):
        from .embedded import EmbeddedPipeline

        return EmbeddedPipeline
    name = pipeline_class_name(model) if model is not None else None
    if name is None:
        return None
    import diffusers

    with quiet_torchvision_notice(model):  # the lookup imports the pipeline's module
        found = getattr(diffusers, name, None)
    return found if isinstance(found, type) else None


def check_call_options(pipeline: type, options: dict[str, Any]) -> None:
    """Each option the user set must be a parameter of the pipeline's __call__: a one-line usage error
    naming the option and the pipeline otherwise (a pipeline would raise TypeError after loading)."""
    parameters = inspect.signature(pipeline.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in options:
        if key not in parameters:
            what = " (it is for video pipelines)" if key == "num_frames" else ""
            raise usage_error(f"{CALL_OPTIONS[key]}: {pipeline.__name__} takes no {key}{what}")
    if "negative_prompt" in options and "true_cfg_scale" in parameters and "true_cfg_scale" not in options:
        logger.warning(f"{pipeline.__name__} uses --negative-prompt only with --true-cfg-scale above 1 (true "
                       f"classifier-free guidance); without it the negative prompt is ignored")


def check_size(model: str | None, options: dict[str, Any]) -> None:
    """--height and --width the embedded pipeline would refuse after loading (multiples of its patch side),
    refused now. Other pipelines' rules differ (some resize, some refuse), so they check for themselves."""
    if not is_embedded(model) or ("height" not in options and "width" not in options):
        return
    from .embedded import weights_path

    folder = weights_path() if model is None else Path(model)
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text())
        channels = config.get("out_channels") or config["in_channels"]
    except (OSError, ValueError, KeyError):
        return  # a broken folder: loading says what is wrong with it
    patch = round((channels / 3) ** 0.5)  # an RGB patch per token: 3 * patch**2 channels (embedded.model)
    for key in ("height", "width"):
        value = options.get(key)
        if value is not None and value % patch:
            below = value - value % patch
            nearest = f"{below} or {below + patch}" if below else str(patch)
            raise usage_error(f"{CALL_OPTIONS[key]} {value}: the embedded model draws sizes that are multiples of "
                              f"{patch} pixels (e.g. {nearest})")
