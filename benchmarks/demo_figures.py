"""The offline demo's figures, as the README states them: the PSNR that `spectrum-cache generate --compare`
prints for the demo prompt with the defaults (14 of 50 passes) and with `--speedup 4` (12 of 50).

    python benchmarks/demo_figures.py        # prints one line per run and the README sentence's numbers

It runs the CLI in this process (one thread, the demo prompt, seed 0), so it is the command a user runs, and
tests/test_docs.py checks that the README states what it prints. The speedups it prints are this machine's and
not stated anywhere: on a shared CPU they are noise.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src")]

from spectrum_cache.cli import main as cli_main  # noqa: E402

PROMPT = "a red circle and a green square"
RUNS = {"default": (), "--speedup 4": ("--speedup", "4")}
PSNR = re.compile(r"PSNR (\d+\.\d+) dB")
PASSES = re.compile(r"(\d+) of (\d+) steps computed")


def demo_figures() -> dict[str, tuple[int, float]]:
    """Run name -> (network passes, PSNR in dB against the full sampler) of the demo as the CLI prints them."""
    figures = {}
    for name, extra in RUNS.items():
        with tempfile.TemporaryDirectory() as folder:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
                status = cli_main(["generate", PROMPT, "--compare", "--threads", "1", "--out",
                                   str(Path(folder) / "demo.png"), *extra])
            text = printed.getvalue()
            if status != 0 or not PSNR.search(text) or not PASSES.search(text):
                raise RuntimeError(f"the demo ({name}) exited {status} without its figures:\n{text[-2000:]}")
            figures[name] = (int(PASSES.search(text).group(1)), float(PSNR.search(text).group(1)))
    return figures


def main() -> int:
    figures = demo_figures()
    for name, (passes, psnr) in figures.items():
        print(f"{name}: {passes} of 50 passes, PSNR {psnr:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
