"""ControlNet pipelines with Spectrum: ControlNet and denoiser passes per generation, and seconds per generation.

    python benchmarks/controlnet_speed.py                      # SD, SDXL, FLUX, SD3; 20 steps; 3 timed calls each
    python benchmarks/controlnet_speed.py --families flux --steps 28 --repeats 5

Small random-initialised pipelines of the real diffusers ControlNet classes (a few hundred to a few thousand
tokens, a ControlNet about half its denoiser's depth, as the common checkpoints are), on the CPU. Per family,
in one process and interleaved call by call, four ways of running the same generation:

- ``off``: no Spectrum;
- ``today``: Spectrum as before ControlNet support: the residuals reach the denoiser, so it runs the network
  on every step (the ControlNet hook is removed after enable_spectrum, which is what that did);
- ``denoiser only``: the denoiser forecasts, the ControlNet runs on every step (its plan-ahead turned off);
- ``spectrum``: both skip the forecast steps (the default now).

Passes are counted on a leaf layer of each ControlNet net and of the denoiser's first block. Times are
medians of ``--repeats`` rounds (one call per mode each) after an untimed round; the speedup against ``today``
is the median of the rounds' ratios, which a machine whose load drifts disturbs less.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum
from spectrum_cache.integrations.adapters import resolve_adapter
from spectrum_cache.integrations.api import denoiser_hook

MODES = ("off", "today", "denoiser only", "spectrum")


def _vae():
    from diffusers import AutoencoderKL

    # One level: latents at pixel size, so a control image of latent size is encoded as it is.
    return AutoencoderKL(block_out_channels=(8,), latent_channels=4, norm_num_groups=8, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         shift_factor=0.0, scaling_factor=1.0)


def _unzero(module: torch.nn.Module) -> torch.nn.Module:
    """Random values where a ControlNet starts at zero, so its residuals are not all zero."""
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.02)
    return module


def _unet(sdxl: bool):
    from diffusers import UNet2DConditionModel

    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=32,
                 projection_class_embeddings_input_dim=64 + 6 * 32) if sdxl else {}
    return UNet2DConditionModel(
        block_out_channels=(64, 128, 192), layers_per_block=2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(4, 8, 12),
        cross_attention_dim=96, norm_num_groups=16, use_linear_projection=sdxl, **extra)


def build_sd(sdxl: bool, steps: int) -> tuple[Any, dict[str, Any]]:
    """SD / SDXL at 256x384 pixels (a 32x48 latent), CFG batched; one ControlNet copied from the UNet's
    encoder (the ControlNet runs the down and mid blocks: about half the UNet)."""
    from diffusers import (ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline,
                           StableDiffusionXLControlNetPipeline)

    torch.manual_seed(0)
    unet = _unet(sdxl)
    controlnet = _unzero(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 64)))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    kwargs = dict(prompt_embeds=torch.randn(1, 16, 96), negative_prompt_embeds=torch.randn(1, 16, 96),
                  image=torch.rand(1, 3, 256, 384), height=256, width=384, num_inference_steps=steps,
                  guidance_scale=5.0, output_type="latent")
    if sdxl:
        pipe = StableDiffusionXLControlNetPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                                   tokenizer_2=None, unet=unet, controlnet=controlnet,
                                                   scheduler=scheduler)
        kwargs.update(pooled_prompt_embeds=torch.randn(1, 64), negative_pooled_prompt_embeds=torch.randn(1, 64))
    else:
        pipe = StableDiffusionControlNetPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                                                 controlnet=controlnet, scheduler=scheduler, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
    return pipe, kwargs


def build_flux(steps: int) -> tuple[Any, dict[str, Any]]:
    """FLUX.1 with 4 double- and 8 single-stream blocks of width 128; a ControlNet of 2 + 4 (InstantX's
    are 5 + 10 of FLUX's 19 + 38); 48x64 pixels and latent, 24x32 = 768 packed tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxControlNetModel, FluxControlNetPipeline
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    config = dict(patch_size=1, in_channels=16, num_layers=4, num_single_layers=8, attention_head_dim=32,
                  num_attention_heads=4, joint_attention_dim=96, pooled_projection_dim=64, axes_dims_rope=(8, 12, 12))
    transformer = FluxTransformer2DModel(**config)
    controlnet = _unzero(FluxControlNetModel(**{**config, "num_layers": 2, "num_single_layers": 4}))
    pipe = FluxControlNetPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(), text_encoder=None,
                                  tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer,
                                  controlnet=controlnet)
    kwargs = dict(prompt_embeds=torch.randn(1, 32, 96), pooled_prompt_embeds=torch.randn(1, 64),
                  control_image=torch.rand(1, 3, 48, 64), height=48, width=64, num_inference_steps=steps,
                  guidance_scale=3.5, output_type="latent")
    return pipe, kwargs


def build_sd3(steps: int) -> tuple[Any, dict[str, Any]]:
    """SD3 with 6 joint blocks of width 128 and a ControlNet of 3; 48x64 pixels and latent, 24x32 = 768 patches,
    CFG batched."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3ControlNetModel, SD3Transformer2DModel
    from diffusers import StableDiffusion3ControlNetPipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=64, patch_size=2, in_channels=4, out_channels=4, num_layers=6,
                                        attention_head_dim=32, num_attention_heads=4, joint_attention_dim=96,
                                        caption_projection_dim=128, pooled_projection_dim=64, pos_embed_max_size=64)
    controlnet = _unzero(SD3ControlNetModel.from_transformer(transformer, num_layers=3,
                                                             num_extra_conditioning_channels=0))
    pipe = StableDiffusion3ControlNetPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(), text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        controlnet=controlnet)
    kwargs = dict(prompt_embeds=torch.randn(1, 32, 96), pooled_prompt_embeds=torch.randn(1, 64),
                  negative_prompt_embeds=torch.randn(1, 32, 96), negative_pooled_prompt_embeds=torch.randn(1, 64),
                  control_image=torch.rand(1, 3, 48, 64), height=48, width=64, num_inference_steps=steps,
                  guidance_scale=5.0, output_type="latent")
    return pipe, kwargs


FAMILIES: dict[str, tuple[Callable[[int], tuple[Any, dict[str, Any]]], str]] = {
    "sd": (lambda steps: build_sd(False, steps), "unet"),
    "sdxl": (lambda steps: build_sd(True, steps), "unet"),
    "flux": (build_flux, "transformer"),
    "sd3": (build_sd3, "transformer"),
}


def _first_layer(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


@contextlib.contextmanager
def mode(pipe: Any, denoiser: str, name: str, config: SpectrumConfig) -> Iterator[None]:
    if name == "off":
        yield
        return
    enable_spectrum(pipe, config)
    owner = denoiser_hook(getattr(pipe, denoiser))
    if name == "today":
        owner.residuals.detach()
    elif name == "denoiser only":
        owner.will_forecast = lambda timestep: None  # this hook only: the ControlNet always runs
    try:
        yield
    finally:
        disable_spectrum(pipe)


def measure(family: str, steps: int, repeats: int, config: SpectrumConfig) -> list[dict[str, Any]]:
    build, denoiser = FAMILIES[family]
    pipe, kwargs = build(steps)
    counts = {"controlnet": 0, "denoiser": 0}

    def counter(key: str):
        def count(*_):
            counts[key] += 1
        return count

    _first_layer(pipe.controlnet).register_forward_hook(counter("controlnet"))
    _first_layer(resolve_adapter(getattr(pipe, denoiser)).blocks[0]).register_forward_hook(counter("denoiser"))
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    passes: dict[str, tuple[int, int]] = {}
    for repeat in range(repeats + 1):
        for name in MODES:
            with mode(pipe, denoiser, name, config), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                counts.update(controlnet=0, denoiser=0)
                torch.manual_seed(0)
                start = time.perf_counter()
                pipe(**kwargs, generator=torch.Generator().manual_seed(0))
                elapsed = time.perf_counter() - start
            passes[name] = (counts["controlnet"], counts["denoiser"])
            if repeat:
                seconds[name].append(elapsed)
    # The speedup is the median of each round's ratio: the modes of a round ran back to back, under the same load.
    return [dict(family=family, mode=name, controlnet=passes[name][0], denoiser=passes[name][1],
                 seconds=statistics.median(seconds[name]),
                 speedup=statistics.median(t / s for t, s in zip(seconds["today"], seconds[name])))
            for name in MODES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode (after one untimed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flex-window", type=float, default=0.75, help="Spectrum's alpha")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SpectrumConfig(flex_window=args.flex_window)
    plan = compute_steps(config, args.steps)
    print(f"{args.steps} steps, alpha {args.flex_window:g}: the network runs on {len(plan)} ({plan}); "
          f"median of {args.repeats} calls, {args.threads} thread(s)")
    print("| family | mode | ControlNet passes | denoiser passes | s / generation | speedup vs today |")
    print("|---|---|---|---|---|---|")
    for family in args.families.split(","):
        for row in measure(family, args.steps, args.repeats, config):
            print(f"| {row['family']} | {row['mode']} | {row['controlnet']} | {row['denoiser']} | "
                  f"{row['seconds']:.3f} | {row['speedup']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
