"""How much does a short plain sampler change the picture? A test bed for caches needs it to.

    python benchmarks/realism.py                    # the shipped model and the first one, side by side
    python benchmarks/realism.py --weights A B ...  # any embedded-pipeline folders

For each model, on its own bundled held-out prompts (one seed per prompt), runs the plain Euler
sampler at 50 steps and at 14 and 10 steps, at guidance 1 (one call per step) and 4 (real CFG), and
prints the PSNR of the short runs against the 50-step image of the same seed. No cache is involved:
this measures the model's sampling paths. Along a straight flow a 10-step sampler lands close to the
50-step result (high PSNR) and holding the last feature is nearly exact, so such a model cannot rank
caches; large DiTs sit far lower. The first embedded model (benchmarks/embedded-v1/, 32x32) is kept
for this comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from spectrum_cache.bench.metrics import psnr  # noqa: E402
from spectrum_cache.bench.prompts import bundled_prompts, load_prompts  # noqa: E402
from spectrum_cache.embedded import load_pipeline, weights_path  # noqa: E402

V1 = ROOT / "embedded-v1"


def sample(pipe, prompts: list[str], steps: int, guidance: float, seed: int) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1]; prompt i uses seed + i."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="pt").images


def measure(weights: Path, prompts: list[str], guidances: list[float], short_steps: list[int],
            full_steps: int, seed: int) -> dict[tuple[float, int], float]:
    pipe = load_pipeline(weights=weights)
    pipe.set_progress_bar_config(disable=True)
    results = {}
    for g in guidances:
        reference = sample(pipe, prompts, full_steps, g, seed)
        for n in short_steps:
            results[(g, n)] = psnr(sample(pipe, prompts, n, g, seed), reference)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", default=None,
                   help="pipeline folders (default: the shipped model and benchmarks/embedded-v1/weights)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 14], help="short plain samplers")
    p.add_argument("--full-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights is None:
        models = [("shipped", weights_path(), bundled_prompts()), ("first (v1)", V1 / "weights", load_prompts(V1 / "prompts.txt"))]
    else:
        models = [(str(w), Path(w), bundled_prompts()) for w in args.weights]
    header = ["model", "prompts"] + [f"g={g:g}, {n} steps" for g in args.guidance for n in args.steps]
    rows = []
    for name, folder, prompts in models:
        start = time.time()
        res = measure(folder, prompts, args.guidance, args.steps, args.full_steps, args.seed)
        rows.append([name, str(len(prompts))] + [f"{res[(g, n)]:.2f} dB" for g in args.guidance for n in args.steps])
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)
    print(f"PSNR of the plain sampler against its own {args.full_steps}-step output (same seed)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
