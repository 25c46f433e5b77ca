"""The planner on the embedded test bed: spectrum-planned against the paper's schedule and every rival at
equal passes, in the issue's cells (guidance 1 and 4 at 14 and 10 passes of 50, and 8 passes of 20).

    python benchmarks/planner_testbed.py --out results/planner            # every cell, 8 prompts each
    python benchmarks/planner_testbed.py --cells 50:10:4 --num-prompts 6   # one cell

Each cell is one `spectrum-cache bench` run (its own folder under --out, so a rerun skips finished items).
spectrum-planned-pK calibrates on the embedded model's bundled calibration prompts (4 of them, seeds
1,000,000 + i), which share no prompt and no seed with the evaluation prompts (the bench's bundled list,
seeds 0, 1, ...). Then a summary table per cell is written to --out/summary.md: mean PSNR / SSIM against the full
sampler, the planned schedule's margin over the paper's, and over the best rival.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# (steps, passes, guidance)
CELLS = ((50, 14, 1.0), (50, 10, 1.0), (50, 14, 4.0), (50, 10, 4.0), (20, 8, 4.0), (20, 8, 1.0))
ALPHA_FOR = {(50, 14): 0.75, (50, 10): 3.0, (20, 8): 3.0}  # the paper's schedule with that many passes
# diffusers' TaylorSeer refresh interval with that many passes (bench.methods.taylorseer_passes), where one exists
TAYLORSEER_FOR = {(50, 10): 7, (20, 8): None, (50, 14): None}
# diffusers' threshold caches near those passes at 50 steps (bench.methods.DIFFUSERS_AT_SPEEDUPS; calibrated at g=4)
THRESHOLD_FOR = {(50, 14): ("diffusers-fbc-t0.15", "diffusers-mag-t0.3-s12-r0.1"),
                 (50, 10): ("diffusers-fbc-t0.22", "diffusers-mag-t1.0-s12-r0.1")}


def methods(steps: int, passes: int) -> list[str]:
    alpha = ALPHA_FOR[(steps, passes)]
    # The default (the paper's full fit, w 0.5), the local fit over the last 6 steps, and the paper's own w = 1.
    names = ["full", f"steps-{passes}", f"spectrum-a{alpha}-w0.5", f"spectrum-a{alpha}-w0.5-h6",
             f"spectrum-a{alpha}-w1.0",
             f"reuse-a{alpha}", f"taylor1-a{alpha}", f"taylor2-a{alpha}", f"spectrum-planned-p{passes}"]
    if TAYLORSEER_FOR.get((steps, passes)):
        names.append(f"diffusers-taylorseer-i{TAYLORSEER_FOR[(steps, passes)]}")
    names += list(THRESHOLD_FOR.get((steps, passes), ()))
    names += [f"cachedit-{c}-a{alpha}" for c in ("dbcache", "taylorseer", "foca")]
    return names


def run_cell(out: Path, steps: int, passes: int, guidance: float, num_prompts: int) -> Path:
    folder = out / f"n{steps}-k{passes}-g{guidance:g}"
    command = [sys.executable, "-m", "spectrum_cache.cli", "bench", "--steps", str(steps), "--guidance-scale",
               str(guidance), "--num-prompts", str(num_prompts), "--methods", ",".join(methods(steps, passes)),
               "--out", str(folder), "--extra-metrics", "off"]
    print(" ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return folder


def summarize(folder: Path, steps: int, passes: int, guidance: float) -> list[str]:
    rows = {r["method"]: r for r in json.loads((folder / "summary.json").read_text()) if r["status"] == "done"}
    planned = rows.get(f"spectrum-planned-p{passes}")
    alpha = ALPHA_FOR[(steps, passes)]
    paper = rows.get(f"spectrum-a{alpha}-w0.5")  # the default settings (the full fit) on the paper's schedule
    local = rows.get(f"spectrum-a{alpha}-w0.5-h6")  # the local fit over the last 6 recorded steps
    lines = [f"\n### {steps} steps, {passes} passes, guidance {guidance:g}\n",
             "| method | passes | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    for name, row in rows.items():
        if name != "full":
            lines.append(f"| {name} | {row['passes']:.4g} | {row['psnr']:.2f} | {row['ssim']:.3f} |")
    if planned and paper:
        rivals = {n: r for n, r in rows.items() if n not in ("full", planned["method"]) and r["psnr"] is not None
                  and r["passes"] <= passes + 0.5}
        best = max(rivals, key=lambda n: rivals[n]["psnr"])
        versus_local = f"{planned['psnr'] - local['psnr']:+.2f} dB" if local else "-"
        lines.append(f"\nplanned - paper's schedule (defaults: the full fit, w 0.5): {planned['psnr'] - paper['psnr']:+.2f} "
                     f"dB; planned - paper's schedule with history=6: {versus_local}; planned - best rival at <= {passes} passes "
                     f"({best}): {planned['psnr'] - rivals[best]['psnr']:+.2f} dB")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/planner"))
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--cells", default=None, help="comma-separated steps:passes:guidance (default: all)")
    args = parser.parse_args()
    cells = CELLS if args.cells is None else [tuple(float(x) if i == 2 else int(x) for i, x in enumerate(c.split(":")))
                                              for c in args.cells.split(",")]
    lines = ["# spectrum-planned on the embedded test bed",
             f"\nEvaluation: the first {args.num_prompts} bundled bench prompts, seeds 0.. (PSNR/SSIM against the "
             "full sampler); calibration: 4 bundled calibration prompts, seeds 1,000,000.."]
    for steps, passes, guidance in cells:
        folder = run_cell(args.out, steps, passes, guidance, args.num_prompts)
        lines += summarize(folder, steps, passes, guidance)
        (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
