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
GRID_LABEL_INCHES = 1.6  # the prompt beside each row
# Optional columns: shown only where at least one method has a value.
OPTIONAL_COLUMNS = (("lpips", "LPIPS", "{:.3f}"), ("clip_score", "CLIP", "{:.2f}"), ("image_reward", "ImageReward", "{:.3f}"))


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every record in the results folder."""
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _speedup(done: list[dict[str, Any]], full_seconds: dict[int, float]) -> float | None:
    """Total reference time over total method time. Each record carries the full sampler's time taken
    in the same run (``reference_seconds``); records written before that field existed are paired with
    the full sampler's record instead."""
    pairs = [(r["reference_seconds"], r["seconds"]) for r in done if r.get("reference_seconds") is not None]
    pairs += [(full_seconds[r["prompt_index"]], r["seconds"]) for r in done
              if r.get("reference_seconds") is None and r["prompt_index"] in full_seconds]
    return sum(p[0] for p in pairs) / sum(p[1] for p in pairs) if pairs else None


def summarize(records: list[dict[str, Any]], method_names: list[str]) -> list[dict[str, Any]]:
    """One row per method (in ``method_names`` order): means over prompts; speedup is total full-sampler
    time over total method time, each pair timed in the same run."""
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
        steps = done[0]["steps"]
        passes = _mean([r["passes"] for r in done])
        memory = [r["peak_memory_mib"] for r in done if r.get("peak_memory_mib") is not None]
        row: dict[str, Any] = {
            "method": name,
            "status": "done",
            "images": len(done),
            "passes": passes,
            "ideal_speedup": steps / passes if passes else None,
            "speedup": 1.0 if name == "full" else _speedup(done, full_seconds),
            "seconds": _mean([r["seconds"] for r in done]),
            "psnr": _mean([r["psnr"] for r in done if r.get("psnr") is not None]),
            "psnr_identical": sum(bool(r.get("identical_to_reference")) for r in done),
            "ssim": _mean([r["ssim"] for r in done if r.get("ssim") is not None]),
            "peak_memory_mib": max(memory) if memory else None,
            "memory_kind": done[0]["memory_kind"],
        }
        for key, _, _ in OPTIONAL_COLUMNS:
            row[key] = _mean([r[key] for r in done if r.get(key) is not None])
        row["shadow_error"] = _mean([r["shadow_error"] for r in done if r.get("shadow_error") is not None])
        if done[0].get("calibration") is not None:
            row["calibration"] = done[0]["calibration"]
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
    # Methods run on different numbers of prompts (a rerun with a subset): say how many each mean covers.
    uneven = len({r["images"] for r in done}) > 1
    header = ["method", *(["prompts"] if uneven else []), "passes", "ideal", "speedup", "PSNR (dB)", "SSIM",
              *(c[1] for c in optional)]
    header += ["checker acc."] if has_checker else []
    header += ["s / image", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in done:
        psnr = _fmt(r["psnr"], "{:.2f}")
        if r["psnr"] is None and r["psnr_identical"] == r["images"] and r["method"] != "full":
            psnr = "inf (identical)"
        cells = [r["method"], *([str(r["images"])] if uneven else []), _fmt(r["passes"], "{:.4g}"),
                 _fmt(r["ideal_speedup"], "{:.2f}x"), _fmt(r["speedup"], "{:.2f}x"),
                 psnr, _fmt(r["ssim"], "{:.3f}"), *(_fmt(r.get(key), pattern) for key, _, pattern in optional)]
        cells += [_fmt(r.get("checker_accuracy"), "{:.3f}")] if has_checker else []
        cells += [_fmt(r["seconds"], "{:.3f}"), _fmt(r["peak_memory_mib"], "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if r["status"] == "skipped":
            lines.append(f"\n- {r['method']}: skipped ({r['note']})")
    for r in done:
        calibration = r.get("calibration")
        if calibration:
            per_prompt = calibration["network_passes"] / max(calibration["full_run_passes"] or 1, 1) / max(
                calibration["prompts"] or 1, 1)
            lines.append(f"\n- {r['method']}: steps {calibration['compute_steps']}, blend weight "
                         f"{calibration['blend_weight']:g}, planned on {calibration['prompts']} calibration prompts "
                         f"(none of them benchmarked) for {calibration['network_passes']} network passes "
                         f"({per_prompt:.1f} full runs per prompt) and {calibration['seconds']:.0f} s.")
    if done:
        kind = done[0]["memory_kind"]
        over = "prompts: how many prompts each mean covers" if uneven else f"means over {done[0]['images']} prompts"
        checker = ("checker acc.: the share of the attributes each caption states (colour, shape, position, "
                   "size) that the embedded model's rule-based checker finds right in the image, over all images; "
                   if has_checker else "")
        lines.append(
            f"\npasses: real passes through the denoiser's last block per trajectory ({over}); "
            f"ideal: steps / passes; speedup: full-sampler time / method time, both timed in the same run "
            f"(warm-up excluded); PSNR/SSIM against the full sampler, same seed; {checker}"
            f"s / image: seconds of one whole pipeline call per image (the fastest of --repeats), mean over the "
            f"prompts; peak MiB: {kind}."
        )
    return "\n".join(lines) + "\n"


def _family(name: str) -> str:
    return name.split("-")[0] if not name.startswith("diffusers") else "diffusers"


# Where a point's label may go, tried in order until one overlaps nothing: (dx, dy) in points from the
# point, and the label's alignment there. The far ones get a thin line back to their point.
_LABEL_SPOTS = (
    *((dx * far, dy * far, ha, va)
      for far in (1, 3)
      for dx, dy, ha, va in ((5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
                             (-5, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"))),
    # Stacked above and below: points in a row (equal values) get their labels on separate lines.
    *((dx, sign * level, ha, "bottom" if sign > 0 else "top")
      for level in (16, 26, 36, 46, 56)
      for sign in (1, -1)
      for dx, ha in ((0, "center"), (8, "left"), (-8, "right"))),
)
PLOT_COLORS = {"steps": "tab:gray", "spectrum": "tab:red", "reuse": "tab:blue", "taylor1": "tab:green",
               "taylor2": "tab:olive", "diffusers": "tab:purple", "cachedit": "tab:brown"}
FRONTIER_LABEL = "frontier"


def pareto_frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (speedup, quality, name) points no other point beats on both (at least as fast and at least
    as good, better in one), sorted by speedup: the best quality one can have at each speed."""
    ordered = sorted(points, key=lambda p: (-p[0], -p[1]))
    frontier, best = [], float("-inf")
    for point in ordered:  # fastest first: a point is on the frontier if it beats every faster one
        if point[1] > best:
            frontier.append(point)
            best = point[1]
    return frontier[::-1]


def _distance_to_box(point: tuple[float, float], box: tuple[float, float, float, float]) -> float:
    """Display-space distance from a point to a rectangle (0 inside it)."""
    x0, y0, x1, y1 = box
    return math.hypot(max(x0 - point[0], 0.0, point[0] - x1), max(y0 - point[1], 0.0, point[1] - y1))


def nearer_points(own: tuple[float, float], others: list[tuple[float, float]],
                  box: tuple[float, float, float, float], slack: float = 1.0) -> int:
    """How many of ``others`` lie nearer the label ``box`` than its ``own`` point: a label that does
    reads as the other point's (in a row of equal values, under the next dot)."""
    mine = _distance_to_box(own, box)
    return sum(_distance_to_box(p, box) < mine - slack for p in others)


def _place_labels(ax: Any, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Label each point where the label overlaps no other label, no point, sits nearer its own point
    than any other and stays inside the axes (greedy, over the spots in _LABEL_SPOTS); where no spot is
    free, the least crowded one, with a line back to its point if another point is nearer."""
    from matplotlib.text import Text

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    centres = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    markers = [(px - 4, py - 4, px + 4, py + 4) for px, py in centres]
    placed: list[tuple[float, float, float, float]] = []
    line = {"arrowstyle": "-", "color": "0.6", "lw": 0.5}

    def crowding(box: tuple[float, float, float, float], index: int) -> float:
        x0, y0, x1, y1 = box
        outside = (max(0.0, area.x0 - x0) + max(0.0, x1 - area.x1) + max(0.0, area.y0 - y0) + max(0.0, y1 - area.y1)) * 1e3
        overlap = sum(max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1]))
                      for b in placed + markers)
        # Misread as another point's label: as bad as lying fully over another label.
        others = centres[:index] + centres[index + 1:]
        misread = nearer_points(centres[index], others, box) * (x1 - x0) * (y1 - y0)
        return outside + overlap + misread

    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    for index in order:
        x, y, text = points[index]
        best = None
        for dx, dy, ha, va in _LABEL_SPOTS:
            far = abs(dx) > 5 or abs(dy) > 6  # a line back to the point
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                                arrowprops=line if far else None)
            label.update_positions(renderer)
            extent = Text.get_window_extent(label, renderer)  # the text alone, not its line to the point
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            score = crowding(box, index)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, label, box, (dx, dy, ha, va))
            else:
                label.remove()
            if score == 0:
                break
        assert best is not None
        score, label, box, (dx, dy, ha, va) = best
        others = centres[:index] + centres[index + 1:]
        if label.arrow_patch is None and nearer_points(centres[index], others, box):
            # No free spot and a nearer neighbour: the line says whose label it is.
            label.remove()
            ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                        arrowprops=line)
        placed.append(box)


def write_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Save quality_figure."""
    import matplotlib.pyplot as plt

    fig = quality_figure(rows, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality_figure(rows: list[dict[str, Any]], title: str) -> Any:
    """PSNR and SSIM (and the checker's accuracy, where there is one) against measured speedup, one
    labelled point per method; a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (and none on a server)
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done" and r["speedup"] is not None]
    panels = [("psnr", "PSNR (dB) vs full sampler"), ("ssim", "SSIM vs full sampler")]
    if any(r.get("checker_accuracy") is not None for r in done):
        panels.append(("checker_accuracy", "caption checker: attributes right"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    labelled = []
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        ax.set_xlabel("measured speedup (x)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        points = [r for r in done if r.get(key) is not None and r["method"] != "full"]
        values = {round(r[key], 3) for r in points}
        if key == "checker_accuracy" and len(values) <= 1:
            # One value for every method (typically 1.000): a row of stacked labels says nothing.
            ax.text(0.5, 0.5, f"every method: {values.pop():.3f}" if values else "no values",
                    transform=ax.transAxes, ha="center", va="center", fontsize=11)
            ax.text(0.5, 0.4, "(the checker cannot tell these apart)", transform=ax.transAxes, ha="center", va="center",
                    fontsize=9, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        full = next((r for r in done if r["method"] == "full" and r.get(key) is not None), None)
        if full is not None:  # the reference: a line, not a point (PSNR/SSIM have none)
            ax.axhline(full[key], color="black", linestyle="--", linewidth=0.8)
        for r in points:
            ax.scatter(r["speedup"], r[key], color=PLOT_COLORS.get(_family(r["method"]), "black"), s=30, zorder=3)
        if key != "checker_accuracy":
            frontier = pareto_frontier([(r["speedup"], r[key], r["method"]) for r in points])
            ax.plot([p[0] for p in frontier], [p[1] for p in frontier], color="0.35", linewidth=1.0, zorder=2,
                    drawstyle="steps-pre", label=FRONTIER_LABEL)
        ax.margins(x=0.15, y=0.12)  # room for the labels at the edges
        labelled.append((ax, [(r["speedup"], r[key], r["method"]) for r in points]))
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=f) for f, c in PLOT_COLORS.items()
               if any(_family(r["method"]) == f for r in done)]
    if any(r["method"] == "full" for r in done):
        handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="full sampler"))
    handles.append(plt.Line2D([], [], color="0.35", linewidth=1.0, label="frontier (best quality at each speed)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.canvas.draw()  # the labels are placed against the final layout
    for ax, marks in labelled:  # (speedup, value, method) of each point
        _place_labels(ax, marks)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def write_grid(records: list[dict[str, Any]], method_names: list[str], out: Path, path: Path, max_rows: int = GRID_MAX_ROWS) -> None:
    """Save grid_figure (nothing where there is no image)."""
    import matplotlib.pyplot as plt

    fig = grid_figure(records, method_names, out, max_rows)
    if fig is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)


def grid_figure(records: list[dict[str, Any]], method_names: list[str], out: Path, max_rows: int = GRID_MAX_ROWS) -> Any:
    """Rows prompts (the first ``max_rows``, labelled with the prompt), columns methods; a matplotlib
    Figure, or None without images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    images = {(r["prompt_index"], r["method"]): r["image"] for r in records if r["status"] == "done"}
    prompts = {r["prompt_index"]: r["prompt"] for r in records}
    indices = sorted({i for i, _ in images})[:max_rows]
    columns = [m for m in method_names if any((i, m) in images for i in indices)]
    if not indices or not columns:
        return None
    fig, axes = plt.subplots(len(indices), len(columns), squeeze=False,
                             figsize=(GRID_LABEL_INCHES + GRID_CELL_INCHES * len(columns), GRID_CELL_INCHES * len(indices) + 0.6))
    for row, index in enumerate(indices):
        for col, name in enumerate(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if (index, name) in images:
                ax.imshow(Image.open(out / images[index, name]), interpolation="nearest")
            else:
                ax.set_frame_on(False)
            if row == 0:
                ax.set_title(name.replace("-", "\n", 1), fontsize=6)
            if col == 0:
                ax.set_ylabel(_wrap(prompts[index], 30), fontsize=6, rotation=0, ha="right", va="center", labelpad=4)
    fig.tight_layout(pad=0.2)
    return fig


def report_methods(records: list[dict[str, Any]], current: list[str], steps: int) -> list[str]:
    """Every method with a record, in the order of this run's list, then the default list, then by name."""
    from .methods import default_methods

    order = {name: i for i, name in enumerate(dict.fromkeys([*current, *(m.name for m in default_methods(steps))]))}
    found = {r["method"] for r in records} | set(current)
    return sorted(found, key=lambda name: (order.get(name, len(order)), name))


def write_report(options: BenchOptions) -> list[dict[str, Any]]:
    """Write table.md, summary.json, quality_vs_speedup.png and grid.png over every record in the
    folder (run.json keeps them to one model, step count, seed and guidance), not only this run's
    methods and prompts: a rerun with a subset must not hide what an earlier run measured. A record
    whose prompt no longer matches this run's prompt at its index is left out (it is stale)."""
    out = options.out
    prompts = options.prompts
    records = [r for r in load_records(out)
               if r["prompt_index"] >= len(prompts) or r["prompt"] == prompts[r["prompt_index"]]]
    names = report_methods(records, [m.name for m in options.methods], options.steps)
    rows = summarize(records, names)
    model = options.model or "embedded model"
    count = len({r["prompt_index"] for r in records})
    title = f"{model}, {options.steps} steps, {count} prompt{'s' if count != 1 else ''}"
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
