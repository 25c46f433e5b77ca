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

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
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


# Torch threads for a call on the CPU: the model is so small that more threads only add synchronisation, and on
# a shared machine they fight other jobs for the cores (the README snippet on a busy 2-core CPU: 34.9 s with
# torch's default 2 threads, 2.8 s with one; benchmarks/embedded_threads.py).
CPU_THREADS = 1


def _with_cpu_threads(call: Callable[..., Any]) -> Callable[..., Any]:
    """Runs a pipeline call on the CPU with at most ``pipeline.cpu_threads`` torch threads, restoring torch's
    setting after; ``cpu_threads`` None leaves torch's setting alone."""

    @functools.wraps(call)
    def run(pipeline: EmbeddedPipeline, *args: Any, **kwargs: Any) -> Any:
        wanted = getattr(pipeline, "cpu_threads", CPU_THREADS)
        before = torch.get_num_threads()
        if wanted is None or pipeline.device.type != "cpu" or before <= wanted:
            return call(pipeline, *args, **kwargs)
        torch.set_num_threads(wanted)
        try:
            return call(pipeline, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


class EmbeddedPipeline(DiffusionPipeline):
    """Text-to-image for the embedded model: components transformer, text_encoder, tokenizer, scheduler.

    On the CPU a call runs with at most ``cpu_threads`` torch threads (default 1: the model is too small to
    share a step out, and more threads fight other work for the cores), and torch's setting is restored after;
    set ``pipe.cpu_threads = None`` to use torch's own.
    """

    model_cpu_offload_seq = "text_encoder->transformer"
    # What callback_on_step_end may read and replace (diffusers' convention).
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

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
        self.cpu_threads: int | None = CPU_THREADS

    @torch.no_grad()
    def encode_prompt(self, prompt: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence embeddings (B, L, D), pooled embeddings (B, D)) in the transformer's dtype."""
        ids = self.tokenizer.ids(prompt).to(self._execution_device)
        seq, pooled = self.text_encoder(ids)
        dtype = self.transformer.dtype
        return seq.to(dtype), pooled.to(dtype)

    def _denoise(self, latents: torch.Tensor, seq: torch.Tensor, pooled: torch.Tensor, t: torch.Tensor,
                 img_ids: torch.Tensor, txt_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        out = self._transformer_at(t)(
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

    def _transformer_at(self, t: torch.Tensor) -> torch.nn.Module:
        """The denoiser of timestep ``t``: the one transformer (a subclass with experts picks one, as Wan2.2 does)."""
        return self.transformer

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` from a step-end callback to stop after that step, as in diffusers."""
        return self._interrupt

    def _set_timesteps(self, num_inference_steps: int, device: torch.device) -> None:
        """The even sigma grid 1 -> 1/N the model is trained for, where the scheduler takes custom sigmas
        (as FluxPipeline's retrieve_timesteps checks); otherwise the scheduler's own grid from its config
        (FlowMatchHeunDiscreteScheduler, DPMSolverMultistepScheduler with use_flow_sigmas)."""
        if "sigmas" in inspect.signature(self.scheduler.set_timesteps).parameters:
            sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
            self.scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)

    @_with_cpu_threads
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
        num_images_per_prompt: int = 1,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict]
        | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate images.

        guidance_scale <= 1 disables CFG (one transformer call per step); with CFG the unconditional branch
        is `negative_prompt` (default "", the caption dropout the model was trained with), or
        `negative_prompt_embeds` with `negative_pooled_prompt_embeds`. height/width default to the
        training resolution (config.sample_size, 48) and must be multiples of the patch side P (6). output_type:
        "pil", "np" (float in [0, 1], NHWC), "pt" (float in [0, 1], NCHW) or "latent" (the final latents, packed
        into tokens as ``latents`` below, as diffusers pipelines return them). `latents`, if given, is the
        initial noise already packed into tokens, shape (B, H/P * W/P, 3*P*P) (see model.pack).

        `num_images_per_prompt` images are made for each prompt, in diffusers' order (all of the first
        prompt's, then the second's); a list of generators then has one per image. As in diffusers,
        `callback_on_step_end(pipe, i, t, tensors)` is called after each step with the tensors named in
        `callback_on_step_end_tensor_inputs` (of ``_callback_tensor_inputs``; default ["latents"]) and
        may return replacements for them; setting ``pipe._interrupt = True`` there stops the loop.

        The scheduler can be swapped as on any diffusers pipeline (``FlowMatchHeunDiscreteScheduler.from_config``,
        ``DPMSolverMultistepScheduler`` with ``use_flow_sigmas=True, prediction_type="flow_prediction"``);
        one without custom sigmas uses its own grid (see _set_timesteps).

        `image` and `strength` make it image-to-image as in diffusers' FluxImg2ImgPipeline: the image
        (PIL, NHWC numpy or NCHW tensor in [0, 1], resized to height x width) is noised to the schedule's
        sigma at step t_start = int(N - N * strength), sigma * noise + (1 - sigma) * image, and sampled
        from there, so N - t_start steps run. With the even grid used here that sigma is 1 - t_start / N,
        which is `strength` itself whenever N * strength is a whole number. It needs a scheduler with
        ``scale_noise`` (the flow-matching Euler and Heun ones).
        """
        height = height or self.config.sample_size
        width = width or self.config.sample_size
        patch = patch_size_of(self.transformer)
        if height % patch or width % patch:
            raise ValueError(f"height and width must be multiples of {patch}, got {height}x{width}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        if image is None and strength != 1.0:
            raise ValueError("strength below 1 needs an image to start from")
        if image is not None and latents is not None:
            raise ValueError("pass image (with the generator for its noise) or latents, not both")
        if image is not None and not hasattr(self.scheduler, "scale_noise"):
            raise ValueError(f"image-to-image needs a scheduler with scale_noise (FlowMatchEulerDiscreteScheduler, "
                             f"FlowMatchHeunDiscreteScheduler); {type(self.scheduler).__name__} has none")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive whole number, got {num_inference_steps!r}")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a whole number >= 1, got {num_images_per_prompt!r}")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: {', '.join(map(repr, unknown))} not among "
                             f"{', '.join(self._callback_tensor_inputs)}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        self._guidance_scale = guidance_scale
        self._interrupt = False
        # Below num_inference_steps for every strength > 0, so at least one step runs.
        t_start = int(num_inference_steps - num_inference_steps * strength)
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("pass prompt or prompt_embeds")
            prompt_embeds, pooled_prompt_embeds = self.encode_prompt(prompt)
        elif pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds needs pooled_prompt_embeds")
        prompts = prompt_embeds.shape[0]
        # As FluxPipeline.encode_prompt: each prompt's embeddings repeated for its images, in order.
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        pooled_prompt_embeds = pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        batch = prompt_embeds.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"generator: a list of {len(generator)} generators for {batch} images "
                             f"({prompts} prompts x num_images_per_prompt {num_images_per_prompt}); pass one per image")
        device, dtype = self._execution_device, self.transformer.dtype
        prompt_embeds = prompt_embeds.to(device, dtype)
        pooled_prompt_embeds = pooled_prompt_embeds.to(device, dtype)
        do_cfg = guidance_scale > 1.0
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass negative_prompt or negative_prompt_embeds, not both")
        if (negative_prompt_embeds is None) != (negative_pooled_prompt_embeds is None):
            raise ValueError("negative_prompt_embeds and negative_pooled_prompt_embeds go together")
        if do_cfg:
            if negative_prompt_embeds is None:
                negatives = [negative_prompt or ""] * prompts if not isinstance(negative_prompt, list) else negative_prompt
                if len(negatives) != prompts:
                    raise ValueError(f"negative_prompt has {len(negatives)} prompts for a batch of {prompts}")
                negative_prompt_embeds, negative_pooled_prompt_embeds = self.encode_prompt(negatives)
            assert negative_pooled_prompt_embeds is not None  # given with negative_prompt_embeds (checked above)
            if negative_prompt_embeds.shape[0] != prompts:
                raise ValueError(f"negative_prompt_embeds has {negative_prompt_embeds.shape[0]} rows for a batch of {prompts}")
            neg_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0).to(device, dtype)
            neg_pooled = negative_pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0).to(device, dtype)

        if image is not None:
            start_image = VaeImageProcessor(vae_scale_factor=patch).preprocess(image, height, width)
            if start_image.shape[0] != prompts:
                raise ValueError(f"image has {start_image.shape[0]} pictures for a batch of {prompts} prompts")
            start_image = start_image.repeat_interleave(num_images_per_prompt, dim=0)
        if latents is None:
            shape = (batch, 3, height, width)
            if isinstance(generator, list):
                noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, device="cpu") for g in generator])
            else:
                # Noise drawn on the CPU so a seed gives the same image on every device.
                noise = torch.randn(shape, generator=generator, device="cpu")
            latents = pack(noise, patch)
        elif latents.shape[0] != batch:
            raise ValueError(f"latents has {latents.shape[0]} images for a batch of {batch}")
        latents = latents.to(device, dtype)
        img_ids = image_ids(height, width, device, dtype, patch, self.config.position_unit)
        txt_ids = text_ids(prompt_embeds.shape[1], device, dtype)
        features = model_position_features(self.transformer, height, width, device, dtype)

        # Every call resets the scheduler, so caches keyed on its step index see a fresh run. A second-order
        # scheduler (Heun) lists each step's timesteps `order` times, as in FluxImg2ImgPipeline.get_timesteps.
        self._set_timesteps(num_inference_steps, device)
        first = t_start * self.scheduler.order
        timesteps = self.scheduler.timesteps[first:]
        self._num_timesteps = len(timesteps)
        if image is not None:
            self.scheduler.set_begin_index(first)
            noise = unpack(latents, height, width, patch)
            start = self.scheduler.scale_noise(start_image.to(device, dtype), timesteps[:1].repeat(batch), noise)
            latents = pack(start, patch)

        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                tt = t.expand(batch).to(dtype)
                # Where the loop is, for caches that need it (diffusers' SeaCache), counted in this call's
                # transformer evaluations (image-to-image runs fewer); the sigma is the model's own t / 1000.
                # Spectrum reads the scheduler.
                where = {"step_index": i, "sigma": float(t) / 1000, "num_inference_steps": len(timesteps)}
                with self.transformer.cache_context("cond", **where):
                    velocity = self._denoise(latents, prompt_embeds, pooled_prompt_embeds, tt, img_ids, txt_ids, features)
                if do_cfg:
                    with self.transformer.cache_context("uncond", **where):
                        uncond = self._denoise(latents, neg_embeds, neg_pooled, tt, img_ids, txt_ids, features)
                    velocity = uncond + guidance_scale * (velocity - uncond)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                    returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                    latents = returned.pop("latents", latents)
                    prompt_embeds = returned.pop("prompt_embeds", prompt_embeds)
                bar.update()

        images = unpack(latents.float(), height, width, patch).mul(0.5).add(0.5).clamp(0, 1)
        self.maybe_free_model_hooks()
        if output_type == "latent":
            out = latents
        elif output_type == "pt":
            out = images
        else:
            out = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                out = [Image.fromarray((im * 255).round().astype(np.uint8)) for im in out]
        if not return_dict:
            return (out,)
        return ImagePipelineOutput(images=out)
