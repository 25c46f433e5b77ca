"""Why does the embedded model miss the checker's target? Four probes, no cache involved.

    python benchmarks/checker_diagnostics.py                       # the shipped weights
    python benchmarks/checker_diagnostics.py --weights FOLDER      # any embedded-pipeline folder

1. Does the shape word move the drawing? "a large red circle / square / triangle", a few seeds each: the
   mean compactness of the red mask per shape word (renders: about 0.92, 0.79 and 0.57).
2. Do the position and size words move the drawing? "a red circle on the left / on the right / at the
   top / at the bottom / in the center" and "a small / large red circle", the same seeds for every
   phrase: the red mask's mean centroid (x, y as fractions of the image) and mean r95 in pixels,
   beside the middle of the region the data draws each position from.
3. Is the checker the limit? The held-out evaluation scored as the checker does, with holes in each
   colour's mask filled, with only its largest connected region kept, and with both; and the same for
   ground-truth renders of those scenes.
4. Where is the picture lost? (`--from-truth 1,0.7,0.5,0.3`) The held-out scenes' ground-truth renders
   noised to t0 (x = (1 - t0) x0 + t0 noise), then sampled to 0 by the pipeline itself (image-to-image
   with strength t0: the last steps * t0 steps of its schedule, with CFG), and scored by the checker.
   steps * t0 must be a whole number, so that t0 is on the schedule.
   t0 = 1 is plain sampling; the lower t0, the more of the true layout the model is given, so the t0 at
   which the score recovers says whether the model fails at composing the scene (high noise) or at
   drawing it (low noise).

Needs scipy (in the dev extra) for the mask clean-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from spectrum_cache.embedded import checker, evaluate, load_pipeline  # noqa: E402
from spectrum_cache.embedded.data import POSITION_PHRASES, POSITIONS, SHAPES, SIZES, render_array  # noqa: E402

VARIANTS = ("as the checker", "holes filled", "largest region", "both")


def _red_masks(pipe, caption: str, seeds: int, steps: int, guidance: float) -> list[dict[str, float]]:
    gens = [torch.Generator().manual_seed(i) for i in range(seeds)]
    images = pipe([caption] * seeds, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                  output_type="pil").images
    found = [checker.describe(checker.color_mask(checker._as_array(im), "red")) for im in images]
    return [f for f in found if f is not None]


def shape_word_compactness(pipe, seeds: int, steps: int, guidance: float) -> dict[str, tuple[int, float]]:
    """Per shape word: (images where red was found, mean compactness of the red mask)."""
    out = {}
    for shape in SHAPES:
        values = [f["compactness"] for f in _red_masks(pipe, f"a large red {shape}", seeds, steps, guidance)]
        out[shape] = (len(values), float(np.mean(values)) if values else float("nan"))
    return out


def position_and_size_words(pipe, seeds: int, steps: int, guidance: float) -> dict[str, tuple[int, float, float, float]]:
    """Per caption: (images where red was found, mean centroid x, mean centroid y, mean r95 in pixels)."""
    captions = [f"a red circle {POSITION_PHRASES[p]}" for p in POSITIONS] + [f"a {s} red circle" for s in SIZES]
    out = {}
    for caption in captions:
        found = _red_masks(pipe, caption, seeds, steps, guidance)
        means = [float(np.mean([f[k] for f in found])) if found else float("nan") for k in ("x", "y", "radius")]
        out[caption] = (len(found), *means)
    return out


def _cleaned(mask: np.ndarray, variant: str) -> np.ndarray:
    if variant in ("holes filled", "both"):
        mask = ndimage.binary_fill_holes(mask)
    if variant in ("largest region", "both"):
        labels, count = ndimage.label(mask)
        if count > 1:
            sizes = ndimage.sum(mask, labels, range(1, count + 1))
            mask = labels == 1 + int(np.argmax(sizes))
    return mask


def score(images: list[np.ndarray], scenes: list, variant: str) -> float:
    """Checker accuracy with each colour mask cleaned by ``variant`` before it is described."""
    describe = checker.describe
    if variant != VARIANTS[0]:
        checker.describe = lambda mask: describe(_cleaned(mask, variant))
    try:
        total = checker.Score()
        for image, scene in zip(images, scenes):
            total.add(checker.score_image(image, scene))
        return total.accuracy
    finally:
        checker.describe = describe


def from_truth(pipe, scenes: list, t0: float, steps: int, guidance: float, seed: int = 0) -> checker.Score:
    """Checker score of samples started from the scenes' renders noised to t0 (SDEdit), same noise per t0."""
    renders = np.stack([np.round(render_array(s)) / 255 for s in scenes]).astype(np.float32)
    images = pipe([s.caption for s in scenes], image=renders, strength=t0, num_inference_steps=steps,
                  guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np").images
    total = checker.Score()
    for image, scene in zip(images, scenes):
        total.add(checker.score_image(image, scene))
    return total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="pipeline folder (default: the shipped weights)")
    p.add_argument("--seeds", type=int, default=8, help="images per shape word")
    p.add_argument("--num", type=int, default=32, help="held-out captions to score")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--from-truth", default="", metavar="T0,...",
                   help="also probe 4: start the sampler from the renders noised to these t0 in (0, 1]")
    args = p.parse_args(argv)
    try:
        starts = [float(v) for v in args.from_truth.split(",")] if args.from_truth else []
    except ValueError:
        p.error(f"--from-truth takes comma-separated numbers in (0, 1], got {args.from_truth!r}")
    if any(not 0 < t0 <= 1 for t0 in starts):
        p.error(f"--from-truth takes comma-separated numbers in (0, 1], got {args.from_truth!r}")
    off_grid = [t0 for t0 in starts if abs(args.steps * t0 - round(args.steps * t0)) > 1e-6]
    if off_grid:
        # The pipeline starts image-to-image on a step of its schedule; elsewhere it would not start at t0.
        p.error(f"--from-truth: --steps times each t0 must be a whole number; {off_grid[0]:g} x {args.steps} is not")
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(weights=args.weights)
    pipe.set_progress_bar_config(disable=True)
    print(f"shape word -> compactness of the drawn red mask ({args.seeds} seeds, {args.steps} steps, guidance {args.guidance:g}):")
    for shape, (found, mean) in shape_word_compactness(pipe, args.seeds, args.steps, args.guidance).items():
        print(f"  {shape}: {mean:.3f} ({found} of {args.seeds} found)")
    print("position / size word -> the drawn red mask (same seeds for every caption; data: middle of the region):")
    for caption, (found, x, y, r95) in position_and_size_words(pipe, args.seeds, args.steps, args.guidance).items():
        word = caption.rsplit(" ", 1)[-1]
        region = f", data ({np.mean(POSITIONS[word][:2]):.2f}, {np.mean(POSITIONS[word][2:]):.2f})" if word in POSITIONS else ""
        print(f"  {caption}: x {x:.2f}, y {y:.2f}, r95 {r95:.1f} px ({found} of {args.seeds} found{region})")
    scenes = evaluate.eval_scenes(args.num)
    images = []
    for start in range(0, args.num, 16):
        chunk = scenes[start:start + 16]
        gens = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        images += [np.asarray(im) for im in pipe([s.caption for s in chunk], num_inference_steps=args.steps,
                                                 guidance_scale=args.guidance, generator=gens, output_type="pil").images]
    truth = [np.round(render_array(s)).astype(np.uint8) for s in scenes]
    print(f"checker accuracy on {args.num} held-out captions (model / ground-truth renders):")
    for variant in VARIANTS:
        print(f"  {variant}: {score(images, scenes, variant):.3f} / {score(truth, scenes, variant):.3f}")
    if starts:
        print(f"started from the renders noised to t0 ({args.num} held-out captions, guidance {args.guidance:g}):")
    for t0 in starts:
        total = from_truth(pipe, scenes, t0, args.steps, args.guidance)
        parts = " ".join(f"{a} {total.correct[a] / max(1, total.total[a]):.3f}" for a in checker.ATTRIBUTES)
        print(f"  t0 {t0:g}: {total.accuracy:.3f} ({parts})")


if __name__ == "__main__":
    main()
