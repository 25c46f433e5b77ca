"""What checking a generation's pipeline call costs per denoiser call (steps.CallMark.running).

Every call of an enabled denoiser checks that the pipeline call that started its generation is still
on the stack (so a run that ended early cannot leak into the next pipeline). This times that check
inside real calls of a tiny FluxPipeline, and prints the median.

    python benchmarks/call_mark_cost.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="pipeline calls of 12 steps")
    args = parser.parse_args()

    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from spectrum_cache import SpectrumConfig, enable_spectrum
    from spectrum_cache.integrations import steps

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=3))

    timings: list[int] = []
    real = steps.CallMark.running

    def timed(mark: steps.CallMark) -> bool:
        start = time.perf_counter_ns()
        result = real(mark)
        timings.append(time.perf_counter_ns() - start)
        return result

    steps.CallMark.running = timed  # this process only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.runs):
            pipe(prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 20), height=32, width=48,
                 num_inference_steps=12, output_type="latent")
    print(f"{len(timings)} checks, median {statistics.median(timings) / 1000:.1f} us per denoiser call")


if __name__ == "__main__":
    main()
