"""What Spectrum did in the last generation, per denoiser and CFG branch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BranchSummary:
    """One feature trajectory: a denoiser's CFG branch (``cond``, ``uncond``, or ``default`` outside a
    ``cache_context``); ``[k]`` marks the k-th call within a step (e.g. Heun's second evaluation), and
    ``from step s`` a trajectory that restarted at step s because the inputs changed shape (Z-Image's
    cfg_truncation). ``num_inference_steps`` is the number of steps this denoiser was planned to run
    in the generation (SDXL's ``denoising_end`` and Wan2.2's expert split already applied).
    ``peak_bytes`` is the most the forecaster held; ``stand_in_bytes`` the tensor bytes the stand-ins of skipped
    single blocks (a UNet's ``mid_block``) held between steps: they keep only their output's layout and make
    fresh tensors on each forecast step, so it is 0. ``shadow_errors``
    holds, for each compute step after the first forecast step, (step, ||forecast - feature|| / ||feature||):
    how far the forecast that step would have had was from what the network made, measured at no extra pass
    (under context parallelism, on each rank's slice of the sequence)."""

    denoiser: str
    branch: str
    num_inference_steps: int | None
    computed_steps: tuple[int, ...]
    forecast_steps: tuple[int, ...]
    peak_bytes: int
    stand_in_bytes: int = 0
    shadow_errors: tuple[tuple[int, float], ...] = ()

    @property
    def mean_shadow_error(self) -> float | None:
        """The mean relative shadow error over the compute steps that have one, or None."""
        return sum(e for _, e in self.shadow_errors) / len(self.shadow_errors) if self.shadow_errors else None

    @property
    def passes_saved(self) -> int:
        return len(self.forecast_steps)

    @property
    def ideal_speedup(self) -> float:
        """Calls / network passes: the speedup if forecasting cost nothing."""
        calls = len(self.computed_steps) + len(self.forecast_steps)
        return calls / len(self.computed_steps) if self.computed_steps else 1.0


@dataclass(frozen=True)
class SpectrumSummary:
    """Returned by ``spectrum_summary``; prints as a small table. ``enabled`` is False for the report
    kept after ``disable_spectrum``."""

    branches: tuple[BranchSummary, ...]
    enabled: bool = True

    @property
    def passes_saved(self) -> int:
        return sum(b.passes_saved for b in self.branches)

    @property
    def ideal_speedup(self) -> float:
        computed = sum(len(b.computed_steps) for b in self.branches)
        calls = computed + self.passes_saved
        return calls / computed if computed else 1.0

    def __str__(self) -> str:
        if not self.branches:
            return "Spectrum: enabled, no denoising steps run yet." if self.enabled else "Spectrum: disabled before any step ran."
        header = ("denoiser", "branch", "steps", "computed", "forecast", "saved", "ideal speedup", "peak held")
        rows = [header]
        for b in self.branches:
            rows.append(
                (
                    b.denoiser,
                    b.branch,
                    str(b.num_inference_steps),
                    str(len(b.computed_steps)),
                    str(len(b.forecast_steps)),
                    str(b.passes_saved),
                    f"{b.ideal_speedup:.2f}x",
                    _human_bytes(b.peak_bytes),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.append(f"total: {self.passes_saved} network passes saved, ideal speedup {self.ideal_speedup:.2f}x")
        for b in self.branches:
            lines.append(f"{b.denoiser}/{b.branch} computed steps: {list(b.computed_steps)}")
            if b.shadow_errors:
                shown = ", ".join(f"{step}: {error:.1%}" for step, error in b.shadow_errors)
                lines.append(f"{b.denoiser}/{b.branch} shadow error (forecast vs network, per compute step): {shown}")
        if not self.enabled:
            lines.append("(the last generation with Spectrum; it has been disabled since)")
        return "\n".join(lines)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
