"""What several test files share: running a pipeline, a bare-denoiser loop, the calibration fixture, and the CLI
as a user runs it. Test files import from here, never from each other."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def own_forward_runs(modules: dict[Any, torch.nn.Module]) -> Iterator[dict[Any, list[int]]]:
    """Counts, per key, runs of the module's own forward, wrapped before Spectrum hooks anything (enable Spectrum
    inside): a stand-in is still a call of the module (its torch hooks fire) but not of its own forward."""
    counts = {}
    for key, module in modules.items():
        count, own = [0], module.forward

        def counted(*args, _own=own, _count=count, **kwargs):
            _count[0] += 1
            return _own(*args, **kwargs)

        module.forward, counts[key] = counted, count
    try:
        yield counts
    finally:
        for module in modules.values():
            module.__dict__.pop("forward", None)


def modules_before_the_blocks(denoisers: dict[str, torch.nn.Module],
                              run: Callable[[], Any]) -> dict[tuple[str, str], tuple[torch.nn.Module, int]]:
    """Per (denoiser name, module path): every module that the denoiser's first call in ``run()`` (without
    Spectrum) runs before its first skipped block (input embedders; time, pooled-text and rotary embeddings; the
    layers inside them), with how often it ran in the whole of ``run()``. The blocks are the adapter's, but not
    what it says a forecast step skips: a module wrongly skipped is still counted."""
    from spectrum_cache.integrations.adapters import resolve_adapter

    order: list[tuple[str, str, bool]] = []
    handles = []
    for name, model in denoisers.items():
        blocks = resolve_adapter(model).blocks
        ids = {id(block) for block in blocks}
        inside = {id(module) for block in blocks for module in block.modules()} - ids
        for path, module in model.named_modules():
            if module is not model and id(module) not in inside:
                key = (name, path, id(module) in ids)
                handles.append(module.register_forward_pre_hook(lambda *a, key=key: order.append(key)))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for name, model in denoisers.items():
        calls = [(path, is_block) for denoiser, path, is_block in order if denoiser == name]
        first_block = next(i for i, (_, is_block) in enumerate(calls) if is_block)
        modules = dict(model.named_modules())
        for path in dict.fromkeys(path for path, _ in calls[:first_block]):
            found[(name, path)] = (modules[path], sum(p == path for p, _ in calls))
    return found


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
