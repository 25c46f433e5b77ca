"""EmbeddedPipeline: a diffusers DiffusionPipeline around the embedded FLUX-style model.

It follows FluxPipeline's code path (FluxTransformer2DModel called with packed tokens, img_ids/txt_ids,
timestep / 1000, FlowMatchEulerDiscreteScheduler.step) so Spectrum hooks on the transformer behave as
on FLUX.1, with two differences that matter for caches:

- classifier-free guidance is real CFG: the transformer is called twice per step, the conditional call
  inside `transformer.cache_context("cond")` and the unconditional one inside `cache_context("uncond")`
  (never batched), so per-branch cache state stays separate;
- there is no VAE: tokens are RGB pixel patches (6x6 for the shipped model; the side is read from
  the transformer's output channels, so the first 32x32 model with 4x4 patches loads too), followed
  on the input by the coordinate channels a model was trained with, if any (model.position_features).

Scheduler choice: FlowMatchEulerDiscreteScheduler with a static shift of 1.0 and
use_dynamic_shifting=False. FLUX shifts by image size because large latents stay recognisable at high
noise; at 48x48 pixels there is nothing to compensate, so the plain sigma grid 1 -> 0 is used.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from .data import IMAGE_SIZE
from .model import POSITION_UNITS, denoiser_input, image_ids, model_position_features, pack, patch_size_of, text_ids, unpack
from .text_encoder import TinyTextEncoder
from .tokenizer import WordTokenizer


PREDICTION_TYPES = ("velocity", "sample")


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The sampler the model is trained for (see the module docstring for the shift choice)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


class EmbeddedPipeline(DiffusionPipeline):
    """Text-to-image for the embedded model: components transformer, text_encoder, tokenizer, scheduler."""

    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(
        self,
        transformer: FluxTransformer2DModel,
        text_encoder: TinyTextEncoder,
        tokenizer: WordTokenizer,
        scheduler: FlowMatchEulerDiscreteScheduler,
        sample_size: int = IMAGE_SIZE,
        prediction_type: str = "velocity",
        position_unit: str = "token",
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}.")
        if position_unit not in POSITION_UNITS:
            raise ValueError(f"position_unit must be one of {', '.join(POSITION_UNITS)}, got {position_unit!r}.")
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        # The resolution the model was trained at, saved in model_index.json (the first embedded model: 32),
        # and what the transformer predicts: the velocity noise - x0 (the shipped weights), or the clean
        # image x0 ("sample"), from which the velocity is (x_t - x0) / sigma; and the unit of the image
        # tokens' RoPE positions (model.image_ids: "token" for the first models, or "pixel").
        self.register_to_config(sample_size=sample_size, prediction_type=prediction_type, position_unit=position_unit)

    @torch.no_grad()
    def encode_prompt(self, prompt: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence embeddings (B, L, D), pooled embeddings (B, D)) in the transformer's dtype."""
        ids = self.tokenizer.ids(prompt).to(self._execution_device)
        seq, pooled = self.text_encoder(ids)
        dtype = self.transformer.dtype
        return seq.to(dtype), pooled.to(dtype)

    def _denoise(self, latents: torch.Tensor, seq: torch.Tensor, pooled: torch.Tensor, t: torch.Tensor,
                 img_ids: torch.Tensor, txt_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        out = self.transformer(
            hidden_states=denoiser_input(latents, features),
            encoder_hidden_states=seq,
            pooled_projections=pooled,
            timestep=t / 1000,
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )[0]
        if self.config.prediction_type == "sample":
            sigma = (t / 1000).to(out.dtype).view(-1, 1, 1)
            return (latents - out) / sigma
        return out

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        height: int | None = None,
        width: int | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        return_dict: bool = True,
        image: PipelineImageInput | None = None,
        strength: float = 1.0,
    ) -> ImagePipelineOutput | tuple:
        """Generate images.

        guidance_scale <= 1 disables CFG (one transformer call per step). height/width default to the
        training resolution (config.sample_size, 48) and must be multiples of the patch side P (6). output_type:
        "pil", "np" (float in [0, 1], NHWC) or "pt" (float in [0, 1], NCHW). `latents`, if given, is the
        initial noise already packed into tokens, shape (B, H/P * W/P, 3*P*P) (see model.pack).

        `image` and `strength` make it image-to-image as in diffusers' FluxImg2ImgPipeline: the image
        (PIL, NHWC numpy or NCHW tensor in [0, 1], resized to height x width) is noised to the schedule's
        sigma at step t_start = int(N - N * strength), sigma * noise + (1 - sigma) * image, and sampled
        from there, so N - t_start steps run. With the even grid used here that sigma is 1 - t_start / N,
        which is `strength` itself whenever N * strength is a whole number.
        """
        height = height or self.config.sample_size
        width = width or self.config.sample_size
        patch = patch_size_of(self.transformer)
        if height % patch or width % patch:
            raise ValueError(f"height and width must be multiples of {patch}, got {height}x{width}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        if image is None and strength != 1.0:
            raise ValueError("strength below 1 needs an image to start from")
        if image is not None and latents is not None:
            raise ValueError("pass image (with the generator for its noise) or latents, not both")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive whole number, got {num_inference_steps!r}")
        # Below num_inference_steps for every strength > 0, so at least one step runs.
        t_start = int(num_inference_steps - num_inference_steps * strength)
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("pass prompt or prompt_embeds")
            prompt_embeds, pooled_prompt_embeds = self.encode_prompt(prompt)
        elif pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds needs pooled_prompt_embeds")
        batch = prompt_embeds.shape[0]
        device, dtype = self._execution_device, self.transformer.dtype
        prompt_embeds = prompt_embeds.to(device, dtype)
        pooled_prompt_embeds = pooled_prompt_embeds.to(device, dtype)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            neg_embeds, neg_pooled = self.encode_prompt([""] * batch)

        if image is not None:
            start_image = VaeImageProcessor(vae_scale_factor=patch).preprocess(image, height, width)
            if start_image.shape[0] != batch:
                raise ValueError(f"image has {start_image.shape[0]} pictures for a batch of {batch} prompts")
        if latents is None:
            shape = (batch, 3, height, width)
            if isinstance(generator, list):
                noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, device="cpu") for g in generator])
            else:
                # Noise drawn on the CPU so a seed gives the same image on every device.
                noise = torch.randn(shape, generator=generator, device="cpu")
            latents = pack(noise, patch)
        latents = latents.to(device, dtype)
        img_ids = image_ids(height, width, device, dtype, patch, self.config.position_unit)
        txt_ids = text_ids(prompt_embeds.shape[1], device, dtype)
        features = model_position_features(self.transformer, height, width, device, dtype)

        # Every call resets the scheduler, so caches keyed on its step index see a fresh run.
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        self.scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas)
        timesteps = self.scheduler.timesteps[t_start:]
        self._num_timesteps = len(timesteps)
        if image is not None:
            self.scheduler.set_begin_index(t_start)
            noise = unpack(latents, height, width, patch)
            start = self.scheduler.scale_noise(start_image.to(device, dtype), timesteps[:1].repeat(batch), noise)
            latents = pack(start, patch)

        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                tt = t.expand(batch).to(dtype)
                # Where the loop is, for caches that need it (diffusers' SeaCache), counted within this call's
                # steps (image-to-image runs fewer); Spectrum reads the scheduler.
                where = {"step_index": i, "sigma": float(self.scheduler.sigmas[t_start + i]), "num_inference_steps": len(timesteps)}
                with self.transformer.cache_context("cond", **where):
                    velocity = self._denoise(latents, prompt_embeds, pooled_prompt_embeds, tt, img_ids, txt_ids, features)
                if do_cfg:
                    with self.transformer.cache_context("uncond", **where):
                        uncond = self._denoise(latents, neg_embeds, neg_pooled, tt, img_ids, txt_ids, features)
                    velocity = uncond + guidance_scale * (velocity - uncond)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
                bar.update()

        images = unpack(latents.float(), height, width, patch).mul(0.5).add(0.5).clamp(0, 1)
        self.maybe_free_model_hooks()
        if output_type == "pt":
            out = images
        else:
            out = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                out = [Image.fromarray((im * 255).round().astype(np.uint8)) for im in out]
        if not return_dict:
            return (out,)
        return ImagePipelineOutput(images=out)
