"""Tiny ControlNet pipelines of the real diffusers classes: SD, SDXL (also ControlNet-Union), FLUX (also
ControlNet-Union) and SD3, with one ControlNet or two (the pipelines wrap a list in their multi-ControlNet class).

Each builder returns ``(pipeline, call_kwargs)`` as the family builders do (families.py), on the same
denoisers (SDXL's, FLUX's and SD3's family builders; SD is SDXL's UNet without the added time
conditioning). A ControlNet's output convolutions start at zero, as in training, which would make its
residuals zero and every check blind to them: here they are random, so a ControlNet that did not run
where it should, or residuals dropped on a compute step, change the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from families import STEPS, _seeded

# A VAE of one level: latents at the pixel size, so a control image of a few pixels is encoded as it is.
_VAE = dict(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), layers_per_block=1,
            shift_factor=0.0, scaling_factor=1.0)


def one_level_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**_VAE)


def _unzero(controlnet: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in the parameters a ControlNet starts with at zero (its zero convolutions)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in controlnet.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return controlnet


def _control_image(seed: int, height: int, width: int, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _unet_controlnets(unet, count: int):
    from diffusers import ControlNetModel

    nets = []
    for index in range(count):
        _seeded(10 + index)
        # Three stride-2 convolutions: the control image at pixel size down to the 8x smaller latent.
        nets.append(_unzero(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16)),
                            20 + index))
    return nets


def sd(count: int = 1) -> tuple[Any, dict[str, Any]]:
    """SD 1.5: SDXL's tiny UNet without the added time conditioning; 64x96 pixels, an 8x12 latent; CFG
    batched; two images per prompt."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline, UNet2DConditionModel

    _seeded()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=24, norm_num_groups=8,
    )
    nets = _unet_controlnets(unet, count)
    pipe = StableDiffusionControlNetPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, controlnet=nets[0] if count == 1 else nets,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    images = [_control_image(30 + i, 64, 96) for i in range(count)]
    kwargs = dict(
        prompt_embeds=torch.randn(1, 5, 24), negative_prompt_embeds=torch.randn(1, 5, 24),
        image=images[0] if count == 1 else images, num_images_per_prompt=2, height=64, width=96,
        num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
    )
    return pipe, kwargs


def sdxl(count: int = 1) -> tuple[Any, dict[str, Any]]:
    """SDXL's family pipeline (families.sdxl) with ControlNets made from its UNet."""
    from diffusers import StableDiffusionXLControlNetPipeline

    from families import sdxl as base

    plain, kwargs = base()
    nets = _unet_controlnets(plain.unet, count)
    pipe = StableDiffusionXLControlNetPipeline(
        vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=plain.unet,
        controlnet=nets[0] if count == 1 else nets, scheduler=plain.scheduler,
    )
    images = [_control_image(30 + i, kwargs["height"], kwargs["width"]) for i in range(count)]
    return pipe, dict(kwargs, image=images[0] if count == 1 else images)


def sdxl_union() -> tuple[Any, dict[str, Any]]:
    """SDXL's family pipeline with a ControlNet-Union (three control types; its control-type transformer has
    the width of the first block)."""
    from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline

    from families import sdxl as base

    plain, kwargs = base()
    unet = plain.unet.config
    _seeded(10)
    net = _unzero(ControlNetUnionModel(
        in_channels=4, down_block_types=unet.down_block_types, block_out_channels=unet.block_out_channels,
        layers_per_block=1, cross_attention_dim=24, attention_head_dim=unet.attention_head_dim,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=20 + 6 * 8, norm_num_groups=8, transformer_layers_per_block=(1, 1),
        conditioning_embedding_out_channels=(4, 8, 8, 16), num_control_type=3, num_trans_channel=16,
        num_trans_head=2, num_proj_channel=16), 20)
    pipe = StableDiffusionXLControlNetUnionPipeline(
        vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=plain.unet,
        controlnet=net, scheduler=plain.scheduler,
    )
    image = _control_image(30, kwargs["height"], kwargs["width"])
    return pipe, dict(kwargs, control_image=[image], control_mode=[1])


def flux(count: int = 1, union: bool = False, true_cfg: bool = False) -> tuple[Any, dict[str, Any]]:
    """FLUX.1's family transformer with InstantX-style ControlNets (the control image VAE-encoded, one
    double- and one single-stream block each); ``union``: ControlNet-Union with three control modes. 4x6
    pixels are a 4x6 latent (the VAE keeps the size), 2x3 packed tokens; two images per prompt. ``true_cfg``:
    a negative prompt, so two transformer calls per step (unnamed) share each ControlNet call."""
    from diffusers import FluxControlNetModel, FluxControlNetPipeline, FluxMultiControlNetModel

    from families import flux as base

    plain, kwargs = base()
    nets = []
    for index in range(count):
        _seeded(10 + index)
        config = dict(plain.transformer.config, num_layers=1, num_single_layers=1, num_mode=3 if union else None)
        nets.append(_unzero(FluxControlNetModel.from_config(config), 20 + index))
    _seeded(1)
    pipe = FluxControlNetPipeline(
        scheduler=plain.scheduler, vae=one_level_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, transformer=plain.transformer,
        controlnet=nets[0] if count == 1 else FluxMultiControlNetModel(nets),
    )
    images = [_control_image(30 + i, 4, 6) for i in range(count)]
    kwargs = dict(kwargs, height=4, width=6, control_image=images[0] if count == 1 else images)
    if union:
        kwargs["control_mode"] = 2 if count == 1 else [2, 0]
    if count > 1:  # the FLUX pipeline takes one scale per ControlNet
        kwargs["controlnet_conditioning_scale"] = [1.0] * count
    if true_cfg:
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
                      true_cfg_scale=2.0)
    if union:  # diffusers 0.42 repeats the control modes, not the mode embedding's text, per image of a prompt
        kwargs["num_images_per_prompt"] = 1
    return pipe, kwargs


def sd3(count: int = 1) -> tuple[Any, dict[str, Any]]:
    """SD3's family transformer with ControlNets of one joint block each (the control image VAE-encoded);
    8x16 pixels (the pipeline wants multiples of 8) are an 8x16 latent, 4x8 patches; CFG batched, two prompts."""
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    from families_image import sd3 as base

    plain, kwargs = base()
    nets = []
    for index in range(count):
        _seeded(10 + index)
        nets.append(_unzero(SD3ControlNetModel.from_transformer(plain.transformer, num_layers=1,
                                                                num_extra_conditioning_channels=0), 20 + index))
    _seeded(1)
    pipe = StableDiffusion3ControlNetPipeline(
        transformer=plain.transformer, scheduler=plain.scheduler, vae=one_level_vae(), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        controlnet=nets[0] if count == 1 else nets,
    )
    images = [_control_image(30 + i, 8, 16) for i in range(count)]
    kwargs = dict(kwargs, height=8, width=16, control_image=images[0] if count == 1 else images)
    if count > 1:  # the SD3 pipeline takes one scale per ControlNet
        kwargs["controlnet_conditioning_scale"] = [1.0] * count
    return pipe, kwargs


@dataclass
class ControlNetCase:
    name: str
    build: Callable[[], tuple[Any, dict[str, Any]]]
    family: str  # the row of the families table (families.FAMILIES) whose denoiser it drives
    denoiser: str


CASES: dict[str, ControlNetCase] = {
    "sd": ControlNetCase("sd", sd, "sdxl", "unet"),
    "sd-multi": ControlNetCase("sd-multi", lambda: sd(2), "sdxl", "unet"),
    "sdxl": ControlNetCase("sdxl", sdxl, "sdxl", "unet"),
    "sdxl-union": ControlNetCase("sdxl-union", sdxl_union, "sdxl", "unet"),
    "flux": ControlNetCase("flux", flux, "flux", "transformer"),
    "flux-true-cfg": ControlNetCase("flux-true-cfg", lambda: flux(true_cfg=True), "flux", "transformer"),
    "flux-multi": ControlNetCase("flux-multi", lambda: flux(2), "flux", "transformer"),
    "flux-union": ControlNetCase("flux-union", lambda: flux(union=True), "flux", "transformer"),
    "flux-union-multi": ControlNetCase("flux-union-multi", lambda: flux(2, union=True), "flux", "transformer"),
    "sd3": ControlNetCase("sd3", sd3, "sd3", "transformer"),
    "sd3-multi": ControlNetCase("sd3-multi", lambda: sd3(2), "sd3", "transformer"),
}


def controlnet_leaves(pipe) -> list[torch.nn.Module]:
    """The first convolution or linear layer of each ControlNet net: it runs once per ControlNet pass."""
    net = pipe.controlnet
    nets = list(net.nets) if hasattr(net, "nets") else [net]
    return [next(m for m in n.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))) for n in nets]
