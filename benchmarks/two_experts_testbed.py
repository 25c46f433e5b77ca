"""Spectrum on two experts, on the embedded test bed: planned per-expert schedules against the paper's schedule
applied per expert and the paper's schedule applied as if the run were one trajectory, at equal passes.

    python benchmarks/two_experts_testbed.py                       # 50 steps, 14 and 10 passes, guidance 4
    python benchmarks/two_experts_testbed.py --finetune-steps 0    # the second expert an exact copy

The two-expert pipeline is Wan2.2's layout around the embedded model: ``transformer`` (the shipped weights)
denoises the steps with t >= boundary_ratio * 1000, ``transformer_2`` the rest, and ``boundary_ratio`` is in the
pipeline's config, which is how diffusers' WanPipeline says it. ``transformer_2`` is the shipped transformer
fine-tuned briefly on the low-noise half (t < boundary) with the training objective of
``spectrum_cache.embedded.train`` (its batches, a constant small learning rate), so the experts differ as
Wan2.2's do, though far less. The arms, each at K network passes per CFG branch over the whole run:

- planned: ``spectrum_cache.calibrate(pipe, ...)`` on the bundled calibration prompts (seeds 1,000,000 + i): one
  schedule per expert, the passes split between them by the planner;
- paper per expert: the paper's adaptive schedule on each expert's own steps, the passes split in proportion to
  their steps (calibrate's own baseline candidate, from its provenance);
- paper as one trajectory: what a port that ignores the switch does: one denoiser whose weights are swapped to the
  second expert's at the boundary (a step-end callback), so one forecaster fits across the switch, with the
  paper's schedule of K passes over the 50 steps.

Evaluation: the first ``--num-prompts`` bundled bench prompts with seeds 0.., PSNR of the uint8 image against the
two-expert full sampler's (every step computed), mean over prompts. No prompt or seed is shared with calibration.
The embedded model is a test bed: these figures rank methods on it, not on Wan2.2.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "src")]

from spectrum_cache import SpectrumConfig, calibrate, disable_spectrum, enable_spectrum, spectrum_summary  # noqa: E402
from spectrum_cache.bench.metrics import psnr, to_nchw  # noqa: E402
from spectrum_cache.bench.prompts import bundled_prompts, calibration_prompts  # noqa: E402
from spectrum_cache.embedded import load_pipeline  # noqa: E402
from spectrum_cache.embedded.pipeline import EmbeddedPipeline  # noqa: E402
from spectrum_cache.embedded.train import flow_loss, training_batch  # noqa: E402

ALPHA_FOR = {14: 0.75, 10: 3.0}  # the paper's alphas with that many passes of 50 (else for_speedup's)
CALIBRATION_SEED = 1_000_000


class TwoExpertPipeline(EmbeddedPipeline):
    """The embedded pipeline with Wan2.2's two experts: ``transformer`` for t >= boundary_ratio * 1000,
    ``transformer_2`` below."""

    def __init__(self, transformer: Any, transformer_2: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 boundary_ratio: float = 0.5, sample_size: int = 48, prediction_type: str = "velocity",
                 position_unit: str = "token") -> None:
        super().__init__(transformer, text_encoder, tokenizer, scheduler, sample_size, prediction_type, position_unit)
        self.register_modules(transformer_2=transformer_2)
        self.register_to_config(boundary_ratio=boundary_ratio)

    def _transformer_at(self, t: torch.Tensor) -> torch.nn.Module:
        return self.transformer if float(t.reshape(-1)[0]) >= self.config.boundary_ratio * 1000 else self.transformer_2


def finetune_low_noise(pipe: EmbeddedPipeline, boundary: float, steps: int, lr: float) -> torch.nn.Module:
    """A copy of ``pipe``'s transformer trained ``steps`` steps on t < ``boundary`` only (text encoder frozen)."""
    expert = copy.deepcopy(pipe.transformer).train().requires_grad_(True)
    if steps == 0:
        return expert.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(expert.parameters(), lr=lr, weight_decay=0.0)
    args = SimpleNamespace(seed=7, batch_size=16, caption_dropout=0.1, timestep_shift=1.0)
    text_encoder = pipe.text_encoder.eval().requires_grad_(False)
    for step in range(steps):
        batch = training_batch(step, args, pipe.tokenizer)
        batch["t"] = batch["t"] * boundary  # the low-noise half only
        loss = flow_loss(expert, text_encoder, batch, pipe.config.prediction_type, pipe.config.position_unit)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return expert.eval().requires_grad_(False)


def images(pipe: Any, prompts: list[str], steps: int, guidance: float, **extra: Any) -> list[torch.Tensor]:
    out = []
    for index, prompt in enumerate(prompts):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(index), **extra).images[0]
        out.append(to_nchw(image))
    return out


def mean_psnr(got: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return statistics.fmean(psnr(a, b) for a, b in zip(got, reference))


def swap_at_boundary(single: EmbeddedPipeline, experts: tuple[dict, dict], boundary: float) -> Any:
    """A step-end callback that loads the second expert's weights into ``single``'s transformer once the next
    step is below the boundary (the first expert's are loaded before each run)."""

    def callback(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
        timesteps = pipe.scheduler.timesteps
        if step + 1 < len(timesteps) and timesteps[step] >= boundary * 1000 > timesteps[step + 1]:
            pipe.transformer.load_state_dict(experts[1])
        return {}

    return callback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--passes", default="14,10")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--boundary-ratio", type=float, default=0.5)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    single = load_pipeline()
    single.set_progress_bar_config(disable=True)
    expert_2 = finetune_low_noise(single, args.boundary_ratio, args.finetune_steps, args.lr)
    tuned = time.perf_counter() - started
    pipe = TwoExpertPipeline(single.transformer, expert_2, single.text_encoder, single.tokenizer,
                             copy.deepcopy(single.scheduler), boundary_ratio=args.boundary_ratio,
                             sample_size=single.config.sample_size, prediction_type=single.config.prediction_type,
                             position_unit=single.config.position_unit)
    pipe.set_progress_bar_config(disable=True)
    experts = (copy.deepcopy(single.transformer.state_dict()), copy.deepcopy(expert_2.state_dict()))
    change = max(float((a - b).abs().max()) for a, b in zip(experts[0].values(), experts[1].values()))

    prompts = bundled_prompts()[: args.num_prompts]
    calibration = [{"prompt": p} for p in calibration_prompts()]
    n, g = args.steps, args.guidance_scale
    reference = images(pipe, prompts, n, g)
    print(f"embedded model, two experts (boundary {args.boundary_ratio}: transformer_2 fine-tuned {args.finetune_steps} "
          f"steps on t < {args.boundary_ratio} in {tuned:.0f} s, largest weight change {change:.3g}); {n} steps, "
          f"guidance {g:g}; {len(prompts)} evaluation prompts (seeds 0..), {len(calibration)} calibration prompts "
          f"(seeds {CALIBRATION_SEED}..)")
    print("\n| passes per branch | planned per expert | paper per expert | paper as one trajectory | "
          "planned - per expert | planned - one trajectory | planned schedules |")
    print("|---|---|---|---|---|---|---|")
    for k in (int(p) for p in args.passes.split(",")):
        planned = calibrate(pipe, [c["prompt"] for c in calibration], passes=k, num_inference_steps=n,
                            guidance_scale=g, seed=CALIBRATION_SEED, progress=False)
        enable_spectrum(pipe, planned)
        got_planned = images(pipe, prompts, n, g)
        # Passes per CFG branch, per expert (the second expert's calls are outside the pipeline's cond/uncond
        # contexts, which it opens on ``transformer``, so its branches are told apart by call order).
        counted: dict[str, set[int]] = {}
        for branch in spectrum_summary(pipe).branches:
            counted.setdefault(branch.denoiser, set()).add(len(branch.computed_steps))
        assert all(len(v) == 1 for v in counted.values()), counted
        disable_spectrum(pipe)
        # None where the paper's warm-up (5 steps on each expert) leaves no split of the passes.
        paper_plan = planned.provenance["paper_schedule"]
        steps_run = {name: entry["steps"] for name, entry in planned.provenance["steps_run"].items()}
        got_per_expert = None
        if paper_plan is not None:
            per_expert = SpectrumConfig(num_inference_steps=n, denoiser_steps=steps_run,
                                        compute_steps={name: tuple(v) for name, v in paper_plan.items()})
            enable_spectrum(pipe, per_expert)
            got_per_expert = images(pipe, prompts, n, g)
            disable_spectrum(pipe)
        # One trajectory: one denoiser, its weights swapped at the boundary.
        one = SpectrumConfig(flex_window=ALPHA_FOR[k]) if n == 50 and k in ALPHA_FOR else SpectrumConfig.for_speedup(n / k, n)
        enable_spectrum(single, one)
        got_one = []
        for index, prompt in enumerate(prompts):
            single.transformer.load_state_dict(experts[0])
            image = single(prompt, num_inference_steps=n, guidance_scale=g, generator=torch.Generator().manual_seed(index),
                           callback_on_step_end=swap_at_boundary(single, experts, args.boundary_ratio)).images[0]
            got_one.append(to_nchw(image))
        one_passes = len(spectrum_summary(single).branches[0].computed_steps)
        disable_spectrum(single)
        single.transformer.load_state_dict(experts[0])
        a, c = mean_psnr(got_planned, reference), mean_psnr(got_one, reference)
        b = mean_psnr(got_per_expert, reference) if got_per_expert is not None else float("nan")
        assert sum(v.pop() for v in counted.values()) == k and one_passes == k, (counted, one_passes)
        shown = "; ".join(f"{name}: {' '.join(map(str, steps))}" for name, steps in planned.compute_steps.items()) \
            if isinstance(planned.compute_steps, Mapping) else " ".join(map(str, planned.compute_steps))
        per = f"{b:.2f}" if got_per_expert is not None else "- (no split fits the paper's warm-ups)"
        versus = f"{a - b:+.2f}" if got_per_expert is not None else "-"
        print(f"| {k} | {a:.2f} | {per} | {c:.2f} | {versus} | {a - c:+.2f} | {shown} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all on {os.cpu_count()} cores, one thread")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
