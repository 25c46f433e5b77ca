"""Merge the records into the report: a Markdown table in the shape of the paper's Table 1, a
quality-against-speedup plot and an image grid (rows prompts, columns methods)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .runner import BenchOptions

GRID_MAX_ROWS = 8
GRID_CELL_INCHES = 1.1
# Optional columns: shown only where at least one method has a value.
OPTIONAL_COLUMNS = (("lpips", "LPIPS", "{:.3f}"), ("clip_score", "CLIP", "{:.2f}"), ("image_reward", "ImageReward", "{:.3f}"))


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every record in the results folder."""
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: list[dict[str, Any]], method_names: list[str]) -> list[dict[str, Any]]:
    """One row per method (in ``method_names`` order): means over prompts; speedup is total full-sampler
    time over total method time on the prompts both finished."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    full_seconds = {r["prompt_index"]: r["seconds"] for r in by_method.get("full", []) if r["status"] == "done"}
    rows = []
    for name in method_names:
        done = [r for r in by_method.get(name, []) if r["status"] == "done"]
        skipped = [r for r in by_method.get(name, []) if r["status"] == "skipped"]
        if not done:
            if skipped:
                rows.append({"method": name, "status": "skipped", "note": skipped[0]["note"]})
            continue
        paired = [r for r in done if r["prompt_index"] in full_seconds]
        steps = done[0]["steps"]
        passes = _mean([r["passes"] for r in done])
        row: dict[str, Any] = {
            "method": name,
            "status": "done",
            "images": len(done),
            "passes": passes,
            "ideal_speedup": steps / passes if passes else None,
            "speedup": (sum(full_seconds[r["prompt_index"]] for r in paired) / sum(r["seconds"] for r in paired)) if paired else None,
            "seconds": _mean([r["seconds"] for r in done]),
            "psnr": _mean([r["psnr"] for r in done if r.get("psnr") is not None]),
            "psnr_identical": sum(bool(r.get("identical_to_reference")) for r in done),
            "ssim": _mean([r["ssim"] for r in done if r.get("ssim") is not None]),
            "peak_memory_mib": max((r["peak_memory_mib"] for r in done if r.get("peak_memory_mib") is not None), default=None),
            "memory_kind": done[0]["memory_kind"],
        }
        for key, _, _ in OPTIONAL_COLUMNS:
            row[key] = _mean([r[key] for r in done if r.get(key) is not None])
        if any("checker_total" in r for r in done):
            correct = sum(r.get("checker_correct", 0) for r in done)
            total = sum(r.get("checker_total", 0) for r in done)
            row["checker_accuracy"] = correct / total if total else None
        rows.append(row)
    return rows


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The paper's Table 1 shape: method, passes, speedup, PSNR, SSIM, [learned metrics], checker."""
    done = [r for r in rows if r["status"] == "done"]
    optional = [c for c in OPTIONAL_COLUMNS if any(r.get(c[0]) is not None for r in done)]
    has_checker = any(r.get("checker_accuracy") is not None for r in done)
    header = ["method", "passes", "ideal", "speedup", "PSNR (dB)", "SSIM", *(c[1] for c in optional)]
    header += ["checker acc."] if has_checker else []
    header += ["s / image", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in done:
        psnr = _fmt(r["psnr"], "{:.2f}")
        if r["psnr"] is None and r["psnr_identical"] == r["images"] and r["method"] != "full":
            psnr = "inf (identical)"
        cells = [r["method"], _fmt(r["passes"], "{:.4g}"), _fmt(r["ideal_speedup"], "{:.2f}x"), _fmt(r["speedup"], "{:.2f}x"),
                 psnr, _fmt(r["ssim"], "{:.3f}"), *(_fmt(r.get(key), pattern) for key, _, pattern in optional)]
        cells += [_fmt(r.get("checker_accuracy"), "{:.3f}")] if has_checker else []
        cells += [_fmt(r["seconds"], "{:.3f}"), _fmt(r["peak_memory_mib"], "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if r["status"] == "skipped":
            lines.append(f"\n- {r['method']}: skipped ({r['note']})")
    if done:
        kind = done[0]["memory_kind"]
        lines.append(
            f"\npasses: real passes through the denoiser's last block per trajectory (mean over {done[0]['images']} prompts); "
            f"ideal: steps / passes; speedup: full-sampler time / method time (warm-up excluded); "
            f"PSNR/SSIM against the full sampler, same seed; peak MiB: {kind}."
        )
    return "\n".join(lines) + "\n"


def _family(name: str) -> str:
    return name.split("-")[0] if not name.startswith("diffusers") else "diffusers"


def write_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """PSNR and SSIM (and the checker's accuracy, where there is one) against measured speedup, one
    labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (and none on a server)
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done" and r["speedup"] is not None]
    panels = [("psnr", "PSNR (dB) vs full sampler"), ("ssim", "SSIM vs full sampler")]
    if any(r.get("checker_accuracy") is not None for r in done):
        panels.append(("checker_accuracy", "caption checker: attributes right"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    colors = {"steps": "tab:gray", "spectrum": "tab:red", "reuse": "tab:blue", "taylor1": "tab:green",
              "taylor2": "tab:olive", "diffusers": "tab:purple"}
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for r in done:
            if r.get(key) is None:
                continue
            if r["method"] == "full":  # the reference: a line, not a point (PSNR/SSIM have none)
                ax.axhline(r[key], color="black", linestyle="--", linewidth=0.8, label="full sampler")
                continue
            ax.scatter(r["speedup"], r[key], color=colors.get(_family(r["method"]), "black"), s=30)
            ax.annotate(r["method"], (r["speedup"], r[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("measured speedup (x)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=f) for f, c in colors.items()]
    axes[0][0].legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_grid(records: list[dict[str, Any]], method_names: list[str], out: Path, path: Path, max_rows: int = GRID_MAX_ROWS) -> None:
    """Rows prompts (the first ``max_rows``), columns methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    images = {(r["prompt_index"], r["method"]): r["image"] for r in records if r["status"] == "done"}
    prompts = sorted({i for i, _ in images})[:max_rows]
    columns = [m for m in method_names if any((i, m) in images for i in prompts)]
    if not prompts or not columns:
        return
    fig, axes = plt.subplots(len(prompts), len(columns), squeeze=False,
                             figsize=(GRID_CELL_INCHES * len(columns), GRID_CELL_INCHES * len(prompts) + 0.6))
    for row, index in enumerate(prompts):
        for col, name in enumerate(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if (index, name) in images:
                ax.imshow(Image.open(out / images[index, name]), interpolation="nearest")
            if row == 0:
                ax.set_title(name.replace("-", "\n", 1), fontsize=6)
            if col == 0:
                ax.set_ylabel(f"#{index}", fontsize=6)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(options: BenchOptions) -> list[dict[str, Any]]:
    """Write table.md, summary.json, quality_vs_speedup.png and grid.png; returns the summary rows."""
    out = options.out
    names = [m.name for m in options.methods]
    prompts = options.prompts
    records = [r for r in load_records(out)
               if r["method"] in names and r["prompt_index"] < len(prompts) and r["prompt"] == prompts[r["prompt_index"]]]
    rows = summarize(records, names)
    model = options.model or "embedded model"
    title = f"{model}, {options.steps} steps, {len(options.prompts)} prompts"
    with tqdm(total=4, desc="report", leave=False) as bar:
        (out / "table.md").write_text(f"# {title}\n\n" + markdown_table(rows))
        bar.update()
        (out / "summary.json").write_text(json.dumps(rows, indent=1))
        bar.update()
        write_plot(rows, out / "quality_vs_speedup.png", title)
        bar.update()
        write_grid(records, names, out, out / "grid.png")
        bar.update()
    return rows
