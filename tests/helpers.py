"""What several test files share: running a pipeline, a bare-denoiser loop, the calibration fixture, and the CLI
as a user runs it. Test files import from here, never from each other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from families import flux
from families_controlnet import one_level_vae


def latents(pipe, kwargs, seed=0, **overrides):
    out = pipe(**{**kwargs, **overrides}, generator=torch.Generator().manual_seed(seed))
    return out.images if hasattr(out, "images") else out.frames


def block_passes(module) -> list[int]:
    count = [0]
    first = next(m for m in module.transformer_blocks[0].modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    return count


def flux_inputs(transformer, batch=1, tokens=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, tokens, 16, generator=gen),
        encoder_hidden_states=torch.randn(batch, 6, 24, generator=gen),
        pooled_projections=torch.randn(batch, 20, generator=gen),
        img_ids=torch.zeros(tokens, 3),
        txt_ids=torch.zeros(6, 3),
        return_dict=False,
    )


@torch.no_grad()
def denoise_loop(transformer, n, context=None, **inputs):
    """A hand-written sampler loop over a bare denoiser."""
    x = inputs.pop("hidden_states")
    for i in range(n):
        t = torch.tensor([1.0 - i / n])
        if context is None:
            v = transformer(hidden_states=x, timestep=t, **inputs)[0]
        else:
            with transformer.cache_context(context):
                v = transformer(hidden_states=x, timestep=t, **inputs)[0]
        x = x - v / n
    return x


def flux_img2img():
    """A FluxImg2ImgPipeline around families.flux's transformer and scheduler, with a one-level VAE (seeded), and
    the tiny FLUX call's arguments."""
    from diffusers import FluxImg2ImgPipeline

    pipe, kwargs = flux()
    torch.manual_seed(0)
    img2img = FluxImg2ImgPipeline(scheduler=pipe.scheduler, vae=one_level_vae(), text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=pipe.transformer)
    return img2img, kwargs


def flux_cfg():
    """A tiny FLUX pipeline with true CFG, its call arguments and two calibration prompts (as embeddings)."""
    pipe, kwargs = flux()
    kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
                  true_cfg_scale=3.0, num_images_per_prompt=1)
    prompts = [{"prompt_embeds": torch.randn(1, 6, 24, generator=torch.Generator().manual_seed(i)),
                "pooled_prompt_embeds": torch.randn(1, 20, generator=torch.Generator().manual_seed(10 + i))}
               for i in range(2)]
    for key in ("prompt_embeds", "pooled_prompt_embeds", "num_inference_steps"):
        kwargs.pop(key)
    return pipe, kwargs, prompts


PROMPT = "a red circle on the left and a blue square on the right"
SRC = Path(__file__).resolve().parent.parent / "src"
# A valid hub id that exists nowhere: a check that ran only after loading would report "cannot load" (1).
UNLOADABLE = ["--model", "spectrum-cache-tests/no-such-model"]


def cli_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def console_script() -> str:
    script = Path(sys.executable).with_name("spectrum-cache")
    assert script.exists(), "the spectrum-cache console script is not installed (pip install -e .)"
    return str(script)


def run_cli(*args: str, script: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [console_script()] if script else [sys.executable, "-m", "spectrum_cache.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=cli_env(), timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    return [line for line in proc.stderr.splitlines() if line.strip() and "\r" not in line and "it/s]" not in line]
