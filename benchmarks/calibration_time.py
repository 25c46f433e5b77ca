"""Where a calibration's time goes: the full (recording) runs, the schedule search, the candidates' runs.

Runs ``spectrum_cache.calibrate`` on the embedded model (its 4 bundled calibration prompts, seeds 1,000,000 + i,
as ``spectrum-cache calibrate`` does) with one CPU thread, and prints the seconds of each phase from the
returned config's ``provenance["cost"]`` and the search's share of the whole.

    python benchmarks/calibration_time.py                          # 14 of 50 passes, guidance 4 (the default)
    python benchmarks/calibration_time.py --passes 10 --guidance 1 --repeat 2

The goal (issue 35): the search at most 10% of the calibration at 14 of 50 passes. On a shared machine the
seconds move with the load; the share moves less.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=14)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=4.0, help="guidance scale (the embedded model's default 4)")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="calibrations in a row (each printed)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1, as the CLI uses for this model)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every run's cost record here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from spectrum_cache import calibrate
    from spectrum_cache.bench.prompts import calibration_prompts
    from spectrum_cache.cli_calibrate import DEFAULT_SEED
    from spectrum_cache.loading import load_model

    pipe = load_model(None, "cpu")
    prompts = calibration_prompts()[: args.num_prompts]
    print(f"embedded model, {args.passes} of {args.steps} passes, guidance {args.guidance:g}, {len(prompts)} prompts, "
          f"{args.threads} thread(s); load average before: {_load()}")
    records = []
    for run in range(args.repeat):
        started = time.perf_counter()
        config = calibrate(pipe, prompts, passes=args.passes, num_inference_steps=args.steps, seed=DEFAULT_SEED,
                           guidance_scale=args.guidance, progress=False)
        wall = time.perf_counter() - started
        cost = dict(config.provenance["cost"])
        cost["wall_seconds"] = round(wall, 3)
        cost["candidates"] = len(config.provenance["candidates"])
        records.append(cost)
        total = cost["seconds"]
        parts = ", ".join(f"{name} {cost[f'{name}_seconds']:.1f} s ({cost[f'{name}_seconds'] / total:.0%})"
                          for name in ("record", "search", "check"))
        print(f"run {run + 1}: {total:.1f} s in all: {parts}; {cost['candidates']} candidates checked; "
              f"load average after: {_load()}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(records, out, indent=1)


def _load() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
