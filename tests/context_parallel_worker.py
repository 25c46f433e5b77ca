"""Spectrum under diffusers' Ulysses context parallelism, on CPU with gloo: the worker run by
tests/test_context_parallel.py (and importable for the single-process reference runs).

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29533 \
        tests/context_parallel_worker.py OUT_DIR [flux] [wan]

(``--standalone`` in place of ``--master_port`` lets torchrun pick a free port.) ``OUT_DIR overflow`` runs
``one_rank_overflows`` instead and writes ``OUT_DIR/overflow{r}.pt``.

Every rank builds the same tiny random-initialised pipeline (same seed), enables
``ContextParallelConfig(ulysses_degree=world_size)`` on its transformer, then (for the Spectrum run)
``enable_spectrum`` on the pipeline, and runs the real pipeline class with ``prompt_embeds`` and
``output_type="latent"``. Each rank writes ``OUT_DIR/rank{r}.pt``: per family and run (``spectrum``:
enable_parallelism then enable_spectrum; ``spectrum_first``: the other order; ``plain``: no Spectrum), the
output latents, the Spectrum summary and the SpectrumWarnings raised.

diffusers picks the rank's device as ``rank % torch.accelerator.device_count()``, which is 0 on a
CPU-only torch; the worker patches ``device_count`` to 1 (every rank then uses the CPU).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import warnings
from typing import Any, Callable

import torch

STEPS = 14
# alpha = 0.75 with the default warm-up: 14 steps run 0 1 2 3 4 6 8 11 and forecast the other six.
FLEX_WINDOW = 0.75


def flux() -> tuple[Any, dict[str, Any]]:
    """FLUX.1 through FluxPipeline, the family test's tiny model (tests/families.py: 16 latent channels, inner
    32, T5 text 24, CLIP pooled 20, two images per prompt) at 32x64 pixels: 2x4 packed image tokens, so the
    sequence splits evenly over the ranks."""
    import families

    pipe, kwargs = families.flux()
    kwargs.update(width=64, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(1))
    return pipe, kwargs


def wan() -> tuple[Any, dict[str, Any]]:
    """Wan2.1 through WanPipeline with CFG (cond / uncond contexts): 4 latent channels, inner 32 (2 heads of
    16), UMT5 text 24; 5 frames at 32x48 pixels are 2 latent frames of 2x3 tokens (12 tokens), 6 text
    tokens, two videos."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=24, freq_dim=8, ffn_dim=40, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )
    kwargs = dict(
        prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), num_videos_per_prompt=2,
        height=32, width=48, num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
        generator=torch.Generator().manual_seed(1),
    )
    return pipe, kwargs


FAMILIES: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {"flux": flux, "wan": wan}


def _output(result: Any) -> torch.Tensor:
    return (result.images if hasattr(result, "images") else result.frames).detach().clone()


def run(family: str, *, spectrum: bool, parallel: bool, spectrum_first: bool = False) -> dict[str, Any]:
    """One generation; returns ``{"output": latents, "summary": [branch dicts] or None, "warnings": [the
    SpectrumWarning messages]}``. With ``parallel`` torch.distributed must be initialised: the transformer
    gets Ulysses over all ranks, before Spectrum (the documented order) or, with ``spectrum_first``, after."""
    from spectrum_cache import SpectrumConfig, SpectrumWarning, enable_spectrum, spectrum_summary

    pipe, kwargs = FAMILIES[family]()
    pipe.set_progress_bar_config(disable=True)

    def parallelise() -> None:
        from diffusers import ContextParallelConfig

        pipe.transformer.enable_parallelism(
            config=ContextParallelConfig(ulysses_degree=torch.distributed.get_world_size())
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectrumWarning)
        if parallel and not spectrum_first:
            parallelise()
        if spectrum:
            enable_spectrum(pipe, SpectrumConfig(flex_window=FLEX_WINDOW))
        if parallel and spectrum_first:
            parallelise()
        with torch.no_grad():
            output = _output(pipe(**kwargs))
    summary = None
    if spectrum:
        summary = [dataclasses.asdict(b) for b in spectrum_summary(pipe).branches]
    found = [str(w.message) for w in caught if issubclass(w.category, SpectrumWarning)]
    return {"output": output, "summary": summary, "warnings": found}


def one_rank_overflows() -> dict[str, Any]:
    """FLUX with Spectrum under Ulysses where rank 1's shard of the feature is finite but so large (3e38) at
    compute step 6 that its forecast at step 7 is not: a data-dependent decision taken on one rank only."""
    from diffusers import ContextParallelConfig
    from spectrum_cache import SpectrumConfig, enable_spectrum, spectrum_summary

    pipe, kwargs = flux()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=torch.distributed.get_world_size()))
    enable_spectrum(pipe, SpectrumConfig(flex_window=FLEX_WINDOW))
    calls = []

    def overflow(module: torch.nn.Module, args: tuple) -> tuple | None:
        calls.append(None)  # FluxPipeline: one transformer call, so one head call, per step
        if torch.distributed.get_rank() == 1 and len(calls) == 7:
            return (torch.full_like(args[0], 3e38),) + args[1:]
        return None

    pipe.transformer.norm_out.register_forward_pre_hook(overflow)
    with torch.no_grad():  # Spectrum's warnings go to stderr: the test reads them
        pipe(**kwargs)
    return {"summary": [dataclasses.asdict(b) for b in spectrum_summary(pipe).branches]}


def _init_distributed(timeout_s: float | None = None) -> int:
    # diffusers: device = torch.device(device_type, rank % torch.accelerator.device_count()); 0 on CPU.
    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1
    timeout = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    torch.distributed.init_process_group(backend="gloo", **timeout)
    return torch.distributed.get_rank()


def main(argv: list[str]) -> None:
    out_dir, families = argv[0], argv[1:] or list(FAMILIES)
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    if families == ["overflow"]:
        # Collectives that never pair up fail after 8 s instead of hanging.
        rank = _init_distributed(timeout_s=8)
        try:
            torch.save(one_rank_overflows(), os.path.join(out_dir, f"overflow{rank}.pt"))
        finally:
            torch.distributed.destroy_process_group()
        return
    rank = _init_distributed()
    try:
        results = {
            family: {
                "spectrum": run(family, spectrum=True, parallel=True),
                "plain": run(family, spectrum=False, parallel=True),
                "spectrum_first": run(family, spectrum=True, parallel=True, spectrum_first=True),
            }
            for family in families
        }
        results["world_size"] = torch.distributed.get_world_size()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    main(sys.argv[1:])
