"""The benchmark loop: every (prompt, method) item through one harness, same seeds, same prompts.

Results folder layout (``--out``)::

    run.json                      what was run (model, steps, seed, ...): a rerun must match it
    records/0003-spectrum-a0.75-w0.5.json   one record per prompt x method (a rerun skips these)
    images/0003-spectrum-a0.75-w0.5.png     the generated image (8-bit, what the metrics compare)
    calibration/mag_ratios.json   MagCache's calibration (one run on the first prompt)
    calibration/spectrum-planned-p10.json   a planned schedule (spectrum_cache.calibrate on the calibration prompts)
    table.md, summary.json, quality_vs_speedup.png, grid.png   written by the main process

Started with ``accelerate launch`` or ``torchrun``, each process takes a contiguous share of the prompts
(accelerate's PartialState; gloo on CPUs, NCCL on GPUs) and the main process merges all records once
every process is done. The folder must be shared by the processes (one machine, or a shared file system).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.logging import get_logger
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .extra_metrics import ExtraMetrics
from .measure import PassCounter, calibrate_mag_cache, captured_log, peak_memory, timed
from .methods import Method, UnsupportedMethod, applied, denoiser
from .metrics import psnr, ssim, to_nchw, to_uint8

WARMUP_STEPS = 2
# Calibration noise: calibration prompt i uses the bench's seed + this + i, never a bench item's seed.
CALIBRATION_SEED_OFFSET = 1_000_000
SEA_FAIL_OPEN = "fail-open"
PACKAGE_LOGGER = "spectrum_cache"
logger = get_logger(__name__)
FINGERPRINT_MAX_BYTES = 64 * 2**20


class BenchError(Exception):
    """A problem with the benchmark's input (reported in one line, exit status 2)."""


@dataclass(frozen=True)
class BenchOptions:
    """Everything one benchmark run needs; ``model=None`` is the embedded model."""

    out: Path
    methods: tuple[Method, ...]
    prompts: tuple[str, ...]
    steps: int
    seed: int = 0
    model: str | None = None
    device: str | None = None
    guidance_scale: float | None = None
    repeats: int = 1
    extra_metrics: str = "auto"  # extra_metrics.MODES
    threads: int | None = None
    scheduler_shift: float | None = None  # a flow-matching scheduler's sigma shift (None: the pipeline's)
    # The spectrum-planned methods' calibration prompts (empty: the embedded model's bundled ones).
    calibration_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from .extra_metrics import MODES

        if self.extra_metrics not in MODES:
            raise ValueError(f"extra_metrics must be one of {', '.join(MODES)}, got {self.extra_metrics!r}")
        shared = sorted(set(self.calibration_prompts) & set(self.prompts))
        if shared:
            raise BenchError(f"the calibration prompts must not be among the benchmark's prompts; both have {shared[0]!r}"
                             + (f" and {len(shared) - 1} more" if len(shared) > 1 else ""))

    def planning_prompts(self) -> tuple[str, ...]:
        """The calibration prompts of the spectrum-planned methods; empty where none are known."""
        if self.calibration_prompts:
            return self.calibration_prompts
        if self.model is not None:
            return ()
        from .prompts import DEFAULT_CALIBRATION_PROMPTS, calibration_prompts

        return tuple(calibration_prompts()[:DEFAULT_CALIBRATION_PROMPTS])

    def run_key(self) -> dict[str, Any]:
        """What must stay the same for records in one folder to be comparable. The prompts are not part
        of it: each record keeps its prompt, and one whose prompt changed is simply run again."""
        return {"model": self.model or "embedded", "weights": weights_fingerprint(self.model), "steps": self.steps,
                "seed": self.seed, "guidance_scale": self.guidance_scale, "scheduler_shift": self.scheduler_shift}


def weights_fingerprint(model: str | None) -> str | None:
    """A hash of a local pipeline's weight files (the embedded model's for None), so that records made
    with other weights are never mixed in; None for a hub id (its files are not local to hash)."""
    import hashlib

    if model is None:
        from ..embedded import weights_path

        folder = weights_path()
    elif Path(model).is_dir():
        folder = Path(model)
    else:
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json"):
            digest.update(path.relative_to(folder).as_posix().encode())
            stat = path.stat()
            # Contents for small files; size and time for big ones, which would take minutes to read.
            digest.update(path.read_bytes() if stat.st_size <= FINGERPRINT_MAX_BYTES else f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def item_stem(prompt_index: int, method: Method) -> str:
    return f"{prompt_index:04d}-{method.name}"


def record_path(out: Path, prompt_index: int, method: Method) -> Path:
    return out / "records" / f"{item_stem(prompt_index, method)}.json"


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file, so an interrupted run never leaves a half record behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    tmp.replace(path)


def finished_record(out: Path, index: int, method: Method, prompt: str) -> dict[str, Any] | None:
    """The record of a finished item, or None if there is none or it was made for another prompt."""
    path = record_path(out, index, method)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("prompt") == prompt else None


def check_run_key(options: BenchOptions) -> None:
    """Refuse to mix records of different settings in one folder (every process checks the same file,
    so all agree without talking)."""
    path = options.out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = [k for k, v in options.run_key().items() if previous.get(k) != v]
        if changed:
            raise BenchError(f"{options.out} holds a run with other {', '.join(changed)}; pick another --out")


def _first_image(images: Any) -> np.ndarray:
    """First image of a pipeline output (PIL, NHWC float in [0, 1] or uint8) as HWC uint8."""
    first = images[0]
    return to_uint8(np.asarray(first.convert("RGB")) if hasattr(first, "convert") else np.asarray(first))


class _Worker:
    """One process's share: loads the model on first need and runs its pending items."""

    def __init__(self, options: BenchOptions, device: torch.device, rank: int) -> None:
        self.options = options
        self.device = device
        self.rank = rank
        self.pipe: Any = None
        self.extra: ExtraMetrics | None = None
        self.mag_ratios: list[float] | None = None
        self.unsupported: dict[str, str] = {}
        self.planned: dict[str, Any] = {}  # spectrum-planned method name -> its calibrated SpectrumConfig
        # The full sampler's time per prompt, measured in this process: speedups compare times taken
        # under the same conditions (threads, processes, machine load), never across runs.
        self.full_seconds: dict[int, float] = {}

    # -- set-up ---------------------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        """Load the model (and the learned metrics) and warm it up, once."""
        if self.pipe is not None:
            return
        from ..loading import load_model

        self.pipe = load_model(self.options.model, str(self.device))
        self.pipe.set_progress_bar_config(disable=True)
        if self.options.scheduler_shift is not None:
            self.pipe.scheduler = shifted_scheduler(self.pipe.scheduler, self.options.scheduler_shift)
        mode = self.options.extra_metrics
        self.extra = ExtraMetrics.load(self.device, enabled=mode != "off")
        if mode == "on":  # asked for by name: each one missing is a warning
            for note in self.extra.notes:
                self._note(note)
        elif (line := self.extra.skipped_line()) is not None:  # auto: optional, so one quiet line (-v)
            logger.info(f"[rank {self.rank}] {line}" if self.rank else line)
        # One short untimed run, so no timed run pays for first-call costs (allocations, lazy init).
        self._generate(self.options.prompts[0], WARMUP_STEPS, self.options.seed)

    def _note(self, message: str) -> None:
        """Something the report will lack (a metric or method skipped): a warning, not a failure."""
        logger.warning(f"[rank {self.rank}] {message}" if self.rank else message)

    def _generate(self, prompt: str, steps: int, seed: int) -> np.ndarray:
        kwargs: dict[str, Any] = {"num_inference_steps": steps, "output_type": "np",
                                  "generator": torch.Generator("cpu").manual_seed(seed)}
        if self.options.guidance_scale is not None:
            kwargs["guidance_scale"] = self.options.guidance_scale
        return _first_image(self.pipe(prompt, **kwargs).images)

    def _mag_calibration(self) -> list[float] | None:
        """MagCache's ratios from one calibration run on the first prompt (every process computes the
        same numbers, so 1 and N processes agree), kept in the results folder for reruns."""
        if self.mag_ratios is not None:
            return self.mag_ratios
        path = self.options.out / "calibration" / "mag_ratios.json"
        prompt, steps, seed = self.options.prompts[0], self.options.steps, self.options.seed
        saved = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("prompt") == prompt:
            self.mag_ratios = saved["ratios"]
            return self.mag_ratios
        module = denoiser(self.pipe)
        if not hasattr(module, "enable_cache"):
            raise UnsupportedMethod(f"{type(module).__name__} has no diffusers cache support (enable_cache)")
        try:
            ratios = calibrate_mag_cache(module, steps, lambda: self._generate(prompt, steps, seed))
        except Exception as error:  # an unsupported model fails in many ways; all mean "skip MagCache"
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UnsupportedMethod(f"MagCache calibration failed: {reason}") from None
        _write_json(path, {"prompt": prompt, "seed": seed, "steps": steps, "ratios": ratios})
        self.mag_ratios = ratios
        return ratios

    def _planned_config(self, method: Method) -> Any:
        """The calibrated config of a spectrum-planned method: planned once per run on the calibration
        prompts, kept in the results folder (and planned again when the prompts or settings changed)."""
        if method.name in self.planned:
            return self.planned[method.name]
        from ..config import SpectrumConfig
        from ..integrations.calibrate import BLEND_WEIGHTS, FITS, INCOHERENT_SHARES, calibrate

        options = self.options
        prompts = options.planning_prompts()
        if not prompts:
            raise UnsupportedMethod("it needs calibration prompts that are not among the benchmark's: "
                                    "--calibration-prompts FILE")
        seed = options.seed + CALIBRATION_SEED_OFFSET
        key = {"prompts": list(prompts), "steps": options.steps, "guidance_scale": options.guidance_scale,
               "seed": seed, "passes": method.planned_passes,
               "planner": repr((FITS, BLEND_WEIGHTS, INCOHERENT_SHARES))}
        path = options.out / "calibration" / f"{method.name}.json"
        key_path = path.with_suffix(".key.json")
        if path.exists() and key_path.exists() and json.loads(key_path.read_text()) == key:
            config = SpectrumConfig.load(path)
        else:
            extra: dict[str, Any] = {} if options.guidance_scale is None else {"guidance_scale": options.guidance_scale}
            assert method.planned_passes is not None  # a spectrum-planned method
            try:
                config = calibrate(self.pipe, list(prompts), passes=method.planned_passes,
                                   num_inference_steps=options.steps, seed=seed, progress=False, **extra)
            except (ValueError, TypeError) as error:
                raise UnsupportedMethod(f"calibration failed: {str(error).splitlines()[0]}") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            config.save(path)
            _write_json(key_path, key)
        self.planned[method.name] = config
        return config

    # -- one item -------------------------------------------------------------------------------------
    def run_item(self, index: int, method: Method, reference: dict[str, Any] | None) -> dict[str, Any]:
        """Generate, measure and score one (prompt, method) item; returns its record."""
        options = self.options
        prompt, seed = options.prompts[index], options.seed + index
        base = {"prompt_index": index, "prompt": prompt, "seed": seed, "method": method.name, "kind": method.kind,
                "steps": options.steps, "sampler_steps": method.steps(options.steps), "rank": self.rank,
                "device": str(self.device)}
        if method.name in self.unsupported:
            return {**base, "status": "skipped", "note": self.unsupported[method.name]}
        self.ensure_loaded()
        try:
            measured = self._measure(method, prompt, seed)
        except UnsupportedMethod as error:
            self.unsupported[method.name] = str(error)
            self._note(f"{method.name} skipped: {error}")
            return {**base, "status": "skipped", "note": str(error)}

        image = measured.pop("image")
        image_path = options.out / "images" / f"{item_stem(index, method)}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(image).save(image_path)
        record = {**base, "status": "done", **measured, "image": str(image_path.relative_to(options.out)),
                  "expected_passes": method.expected_passes(options.steps)}
        reference_image = None if reference is None else np.asarray(Image.open(options.out / reference["image"]).convert("RGB"))
        if method.kind == "full":
            self.full_seconds[index] = record["seconds"]
            # The reference against itself: PSNR would be inf, so quality is left out (the paper's "-").
            record.update(psnr=None, ssim=None, reference_seconds=record["seconds"], speedup=1.0)
        elif reference_image is None:
            record.update(psnr=None, ssim=None, speedup=None)
        else:
            reference_seconds = self._full_seconds(index, prompt, seed)
            record.update(psnr=psnr(to_nchw(image), to_nchw(reference_image)), ssim=ssim(to_nchw(image), to_nchw(reference_image)),
                          reference_seconds=reference_seconds, speedup=reference_seconds / record["seconds"])
            if not np.isfinite(record["psnr"]):
                record["psnr"] = None
                record["identical_to_reference"] = True
        assert self.extra is not None  # loaded by ensure_loaded()
        record.update(self.extra.score(image, None if method.kind == "full" else reference_image, prompt))
        stated = _embedded_caption(prompt) if options.model is None else None
        if stated is not None:
            from ..embedded.checker import score_image

            score = score_image(image, stated)
            record.update(checker_correct=sum(score.correct.values()), checker_total=sum(score.total.values()),
                          checker_accuracy=score.accuracy)
        record["finished_at"] = time.time()
        return record

    def _full_seconds(self, index: int, prompt: str, seed: int) -> float:
        """The full sampler's time on this prompt in this process; timed again here when its record
        comes from an earlier run (a rerun adding methods), whose conditions may have differed."""
        if index not in self.full_seconds:
            self.full_seconds[index] = self._measure(Method("full", "full"), prompt, seed)["seconds"]
        return self.full_seconds[index]

    def _measure(self, method: Method, prompt: str, seed: int) -> dict[str, Any]:
        """Run ``repeats`` times with the method freshly switched on; quality, passes and memory from
        the first run, time as the fastest run (the least disturbed by the rest of the machine)."""
        options = self.options
        steps = method.steps(options.steps)
        mag = self._mag_calibration() if method.cache == "mag" else None
        planned = None
        if method.planned_passes is not None:
            planned = self._planned_config(method)
            method = dataclasses.replace(method, spectrum=planned)
        module = denoiser(self.pipe)
        result: dict[str, Any] = {}
        times = []
        for repeat in range(options.repeats):
            with captured_log("diffusers.hooks.sea_cache", 30) as sea_log:  # 30 = logging.WARNING
                with applied(self.pipe, method, options.steps, mag, options.guidance_scale), PassCounter(module) as counter:
                    with peak_memory(self.device) as memory:
                        image, seconds = timed(self.device, lambda: self._generate(prompt, steps, seed))
                    summary = self._summary() if method.spectrum is not None else None
            fail_open = [m for m in sea_log if SEA_FAIL_OPEN in m]
            if fail_open:  # it would run, but skip nothing: not a method worth a row
                raise UnsupportedMethod(f"SeaCache ran fail-open, skipping nothing: {fail_open[0].strip()}")
            times.append(seconds)
            if repeat == 0:
                result = {"image": image, "passes": round(counter.passes(steps), 3), "denoiser_calls": counter.calls,
                          "block_passes": counter.block_passes,
                          "peak_memory_mib": None if memory["peak_mib"] is None else round(memory["peak_mib"], 1),
                          "memory_kind": memory["kind"]}
                if summary is not None:
                    result["computed_steps"] = list(summary.branches[0].computed_steps)
                    shadow = [b.mean_shadow_error for b in summary.branches if b.mean_shadow_error is not None]
                    result["shadow_error"] = float(np.mean(shadow)) if shadow else None
                    result["shadow_errors"] = {b.branch: [list(e) for e in b.shadow_errors] for b in summary.branches}
                if planned is not None:
                    result["calibration"] = _calibration_record(planned)
        result.update(seconds=min(times), seconds_all=times)
        return result

    def _summary(self) -> Any:
        from ..integrations import spectrum_summary

        return spectrum_summary(self.pipe)


def _calibration_record(config: Any) -> dict[str, Any]:
    """What a record says of its planned schedule: the schedule, w, and the calibration's cost and score."""
    record = config.provenance or {}

    def finite(value: Any) -> Any:
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    return {"compute_steps": list(config.compute_steps), "blend_weight": config.blend_weight,
            "prompts": record.get("calibration_prompts"), "network_passes": record.get("cost", {}).get("network_passes"),
            "full_run_passes": record.get("cost", {}).get("full_run_passes"),
            "seconds": record.get("cost", {}).get("seconds"), "mean_psnr": finite(record.get("mean_psnr")),
            "paper_mean_psnr": finite(record.get("paper_mean_psnr"))}


def shifted_scheduler(scheduler: Any, shift: float) -> Any:
    """A copy of a flow-matching scheduler whose sigmas are shifted, sigma' = S sigma / (1 + (S - 1) sigma),
    as SD3 (S = 3) and FLUX (dynamic S) do: more steps at high noise, so the noise level is no longer
    linear in the step index."""
    if "shift" not in scheduler.config:
        raise BenchError(f"--scheduler-shift: the pipeline's {type(scheduler).__name__} has no sigma shift "
                         "(it needs a flow-matching scheduler such as FlowMatchEulerDiscreteScheduler)")
    return type(scheduler).from_config(scheduler.config, shift=shift, use_dynamic_shifting=False)


def _resolve_device(name: str | None, state: Any) -> torch.device:
    if name is None:
        return state.device
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and state.num_processes > 1:
        device = torch.device("cuda", state.local_process_index)
    return device


def _distributed_state(device: str | None) -> Any:
    """accelerate's PartialState for this process. On CPU it must be asked for by name: without
    ``cpu=True`` accelerate sets up no process group when there is no GPU, so under torchrun every
    process believes it is rank 0 of 1 and runs everything."""
    from accelerate import PartialState

    on_cpu = torch.device(device).type == "cpu" if device is not None else not torch.cuda.is_available()
    return PartialState(cpu=on_cpu)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run (or finish) the benchmark; on the main process also write the report. Returns a dict with
    the process's ``ran`` and ``skipped`` item counts and, on the main process, the summary ``rows``."""
    from ..loading import cpu_threads
    from .report import write_report

    state = _distributed_state(options.device)
    device = _resolve_device(options.device, state)
    check_run_key(options)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(options.threads, options.model, state.num_processes))
    options.out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process and not (options.out / "run.json").exists():
        _write_json(options.out / "run.json", options.run_key())

    with state.split_between_processes(list(range(len(options.prompts)))) as my_prompts:
        my_prompts = list(my_prompts)
    worker = _Worker(options, device, state.process_index)
    done = {(i, m.name) for i in my_prompts for m in options.methods
            if finished_record(options.out, i, m, options.prompts[i]) is not None}
    pending = [(i, m) for i in my_prompts for m in options.methods if (i, m.name) not in done]
    if pending:
        from ..errors import exit_at_once_on_interrupt

        with exit_at_once_on_interrupt():  # loading is start-up: Ctrl-C there ends the process at once
            worker.ensure_loaded()  # before the progress bar, so a model that cannot load fails cleanly
    ran = 0
    # Log lines (the notes above) go through tqdm, so they never cut a progress bar in half.
    with logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE_LOGGER)]):
        bar = tqdm(pending, desc=f"bench rank {state.process_index}" if state.num_processes > 1 else "bench",
                   position=state.process_index, unit="image", dynamic_ncols=True)
        for index, method in bar:
            bar.set_postfix_str(f"prompt {index} {method.name}")
            reference = finished_record(options.out, index, Method("full", "full"), options.prompts[index])
            record = worker.run_item(index, method, reference)
            _write_json(record_path(options.out, index, method), record)
            ran += 1
        bar.close()

    state.wait_for_everyone()
    result: dict[str, Any] = {"ran": ran, "skipped": len(done), "rank": state.process_index}
    if state.is_main_process:
        result["rows"] = write_report(options)
    state.wait_for_everyone()
    return result


def _embedded_caption(prompt: str) -> tuple | None:
    """What an embedded-model caption states, for the checker; None for any other prompt."""
    from ..embedded.data import parse_caption

    return parse_caption(prompt)
