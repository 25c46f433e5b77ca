"""How long SpectrumConfig.load takes for a long schedule file (issue 34: duplicates were found with
list.count per entry, 9-13 s for 30,000 steps).

Writes a file of N steps that computes every other step, loads it --runs times, and prints the median.

    python benchmarks/schedule_load.py [--steps 30000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000, help="num_inference_steps of the file")
    parser.add_argument("--runs", type=int, default=5, help="loads timed")
    args = parser.parse_args()

    from spectrum_cache import SpectrumConfig

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schedule.json"
        config = {"num_inference_steps": args.steps, "compute_steps": list(range(0, args.steps, 2))}
        path.write_text(json.dumps({"format": 1, "spectrum_config": config}))
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            SpectrumConfig.load(path)
            timings.append(time.perf_counter() - started)
        size = path.stat().st_size
    print(f"{args.steps} steps ({size / 1000:.0f} kB): median load {statistics.median(timings) * 1000:.1f} ms "
          f"over {args.runs} loads")


if __name__ == "__main__":
    main()
