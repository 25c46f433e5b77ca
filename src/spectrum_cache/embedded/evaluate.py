"""Score the embedded model with the rule-based checker on held-out captions.

    python -m spectrum_cache.embedded.evaluate --num 64 --steps 50

Held-out captions (data.is_held_out) are never seen in training. Prints the fraction of the attributes
the captions state (colour and shape of every object; position and size where stated) that the
checker finds right, and a breakdown per attribute.
"""

from __future__ import annotations

import argparse
import json

import torch

from .checker import ATTRIBUTES, Score, score_image
from .data import Scene, render, sample_split_scene
from .pipeline import EmbeddedPipeline

EVAL_SEED_BASE = 10_000_000  # evaluation scenes come from a seed range training never uses


def eval_scenes(num: int) -> list[Scene]:
    """The first `num` held-out evaluation scenes (fixed for every run)."""
    return [sample_split_scene(EVAL_SEED_BASE + i, held_out=True) for i in range(num)]


def evaluate(pipe: EmbeddedPipeline, num: int = 64, steps: int = 50, guidance_scale: float = 4.0,
             batch_size: int = 16, seed: int = 0, save_grid: str | None = None) -> Score:
    """Generate one image per held-out scene (seed `seed + i` for scene i) and score them all."""
    scenes = eval_scenes(num)
    total = Score()
    images = []
    for start in range(0, num, batch_size):
        chunk = scenes[start : start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe([s.caption for s in chunk], num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=gens, output_type="pil").images
        for image, scene in zip(out, chunk):
            total.add(score_image(image, scene))
        images += out
    if save_grid:
        _save_grid(save_grid, images, scenes)
    return total


def _save_grid(path: str, images: list, scenes: list[Scene]) -> None:
    """Generated image next to one rendering of its scene, 8 pairs per row, upscaled 3x."""
    from PIL import Image

    cols, size = 8, images[0].size[0] * 3
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * 2 * size + cols * 4, rows * size), (255, 255, 255))
    for i, (im, sc) in enumerate(zip(images, scenes)):
        x, y = (i % cols) * (2 * size + 4), (i // cols) * size
        grid.paste(im.resize((size, size), Image.Resampling.NEAREST), (x, y))
        grid.paste(render(sc).resize((size, size), Image.Resampling.NEAREST), (x + size, y))
    grid.save(path)


def main(argv: list[str] | None = None) -> float:
    """CLI: print the checker figure (and the per-attribute breakdown as JSON)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="pipeline folder (default: the shipped weights)")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default=None, help="save a PNG of samples next to ground truth")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from . import load_pipeline

    pipe = load_pipeline(weights=args.weights)
    pipe.set_progress_bar_config(disable=True)
    score = evaluate(pipe, args.num, args.steps, args.guidance, seed=args.seed, save_grid=args.grid)
    breakdown = {a: round(score.correct[a] / max(1, score.total[a]), 3) for a in ATTRIBUTES}
    print(f"attributes right: {score.accuracy:.3f} ({sum(score.correct.values())}/{sum(score.total.values())}) "
          f"on {args.num} held-out captions, {args.steps} steps, guidance {args.guidance}")
    print(json.dumps({"per_attribute": breakdown, "checks": score.total}))
    return score.accuracy


if __name__ == "__main__":
    main()
