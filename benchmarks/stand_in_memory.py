"""What the stand-ins of skipped modules keep between steps (``stand_in_bytes``), per family.

    python benchmarks/stand_in_memory.py                          # this checkout
    python benchmarks/stand_in_memory.py --before /work/main/src  # and another checkout's sources, side by side
    python benchmarks/stand_in_memory.py --families flux,wan2.1 --json

Each family is the tiny random-initialised pipeline of tests/families.py (real diffusers classes, toy widths,
batch 2 for the flagships, CFG where the family has it), run once with ``SpectrumConfig(warmup_steps=3,
flex_window=0.75)``: 12 steps, 5 forecast. The figure is the sum over the denoisers' CFG branches of
``spectrum_summary(pipe).branches[i].stand_in_bytes``, the most the stand-ins held at once; next to it, the
forecaster's ``peak_bytes`` on the same run, for scale. The sizes are toy sizes: what matters is which families
keep anything, and how it compares with the forecaster. ``--before`` runs the same script on other sources
(the families from this checkout's tests/) in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(names: list[str] | None) -> dict[str, dict[str, int]]:
    import torch

    from families import FAMILIES
    from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum, spectrum_summary

    torch.set_num_threads(1)
    config = SpectrumConfig(warmup_steps=3, flex_window=0.75)
    out = {}
    for name in names or sorted(FAMILIES):
        pipe, kwargs = FAMILIES[name].build()
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        enable_spectrum(pipe, config)
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0))
        branches = spectrum_summary(pipe).branches
        out[name] = {"stand_in_bytes": sum(b.stand_in_bytes for b in branches),
                     "peak_bytes": sum(b.peak_bytes for b in branches), "branches": len(branches)}
        disable_spectrum(pipe)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=None, help="comma-separated names of tests/families.py (default: all)")
    parser.add_argument("--src", default=os.path.join(ROOT, "src"), help="the spectrum_cache sources to measure")
    parser.add_argument("--before", default=None, metavar="SRC", help="also measure these sources, as 'before'")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sys.path[:0] = [args.src, os.path.join(ROOT, "tests")]
    import warnings

    from diffusers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    names = args.families.split(",") if args.families else None
    after = measure(names)
    if args.json:
        print(json.dumps(after))
        return
    before = None
    if args.before:
        command = [sys.executable, os.path.abspath(__file__), "--src", args.before, "--json"]
        if args.families:
            command += ["--families", args.families]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        before = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"sources: {args.src}" + (f"; before: {args.before}" if before else ""))
    head = "| family | branches | stand_in_bytes" + (" before | stand_in_bytes after" if before else "")
    print(head + " | forecaster peak_bytes |")
    print("|---" * (head.count("|") + 1) + "|")
    for name, row in after.items():
        cells = [name, str(row["branches"])]
        if before:
            cells.append(f"{before[name]['stand_in_bytes']:,}")
        cells += [f"{row['stand_in_bytes']:,}", f"{row['peak_bytes']:,}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
