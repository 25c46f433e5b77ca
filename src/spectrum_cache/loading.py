"""Loading a pipeline for the command line: the embedded model or any diffusers pipeline, the device
it runs on, and how many CPU threads it gets.

Shared by ``spectrum-cache generate`` (cli.py) and ``spectrum-cache bench`` (bench/), which both sit
on top of this module. Problems are reported as CommandError (one line, no traceback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CommandError, first_line, usage_error

EMBEDDED_CLASS_NAME = "EmbeddedPipeline"
# Device types a pipeline can run on; "meta" and the like allocate nothing and would fail later.
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
# --dtype: torch dtype names a pipeline can be loaded in.
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# --offload: diffusers' enable_model_cpu_offload (whole components) and enable_sequential_cpu_offload
# (submodule by submodule, least memory, slowest). Both move weights onto an accelerator as they run.
OFFLOAD_MODES = ("model", "sequential")
OFFLOAD_DEVICE_TYPES = ("cuda", "xpu", "mps")
# What diffusers appends to a hub error whose cause it does not show.
_STACKTRACE_HINT = "Please check out the root cause in the stacktrace above."


def available_devices() -> list[str]:
    """The devices this torch build can use here, e.g. ['cpu', 'cuda:0', 'cuda:1']."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        devices += [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return devices


def resolve_device(name: str | None, option: str = "--device") -> str:
    """``name`` checked against this machine (None: cuda if available, else cpu); a one-line usage
    error naming what is available where it is not usable."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    available = available_devices()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise usage_error(f"{option} {name!r} is not a device name; available here: {', '.join(available)}") from None
    if device.type not in SUPPORTED_DEVICE_TYPES:
        raise usage_error(f"{option} {name!r}: pipelines run on {', '.join(SUPPORTED_DEVICE_TYPES)}; "
                          f"available here: {', '.join(available)}")
    # Asked by type, not by allocating: a backend torch was not built for answers an allocation with
    # pages of dispatcher internals.
    usable = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
        "xpu": hasattr(torch, "xpu") and torch.xpu.is_available() and (device.index or 0) < torch.xpu.device_count(),
    }[device.type]
    if not usable:
        raise usage_error(f"{option} {name!r} is not available here (torch {torch.__version__}); "
                          f"available: {', '.join(available)}")
    return name


def check_offload(offload: str | None, device: str, requested: str | None) -> None:
    """--offload keeps weights on the CPU and moves each component onto an accelerator while it runs,
    so it needs one: a one-line usage error on a machine (or a --device) without."""
    if offload is None:
        return
    import torch

    kind = torch.device(device).type
    if kind in OFFLOAD_DEVICE_TYPES:
        return
    if requested is not None:
        raise usage_error(f"--offload {offload} moves each component onto --device while it runs, so it needs an "
                          f"accelerator ({', '.join(OFFLOAD_DEVICE_TYPES)}); --device {requested} is not one")
    raise usage_error(f"--offload {offload} needs an accelerator ({', '.join(OFFLOAD_DEVICE_TYPES)}) to move each "
                      f"component onto while it runs; this machine has none (torch {torch.__version__}: "
                      f"{', '.join(available_devices())}); drop --offload to run on the CPU")


def torch_dtype(name: str | None, device: str, model: str | None) -> Any:
    """The dtype to load in: ``name`` (one of DTYPE_NAMES), else float32 for the embedded model and on
    the CPU (fast CPU matmuls), bfloat16 for --model on an accelerator (what FLUX and Wan ship in)."""
    import torch

    if name is not None:
        if name not in DTYPE_NAMES:
            raise usage_error(f"--dtype {name!r}: use one of {', '.join(DTYPE_NAMES)}")
        return getattr(torch, name)
    if is_embedded(model) or torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16


def pipeline_class_name(model: str) -> str | None:
    """The ``_class_name`` of a local pipeline folder's model_index.json, None for anything else."""
    index = Path(model) / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def is_embedded(model: str | None) -> bool:
    """The embedded model, or a folder holding an EmbeddedPipeline (e.g. one retrained here)."""
    return model is None or pipeline_class_name(model) == EMBEDDED_CLASS_NAME


def check_model(model: str | None, option: str = "--model") -> None:
    """Before anything loads: a local folder must exist (and be one), anything else must be a valid hub
    id. Whether the hub has it is only known when loading."""
    if model is None:
        return
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise usage_error(f"{option} {model!r} is a file; pass a pipeline folder (with model_index.json) or a hub id")
        if not (path / "model_index.json").is_file():
            raise usage_error(f"{option} {model!r} is a folder without model_index.json; pass a diffusers pipeline folder")
        return
    looks_like_path = model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1
    if looks_like_path:
        raise usage_error(f"{option} {model!r}: no such folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise usage_error(f"{option} {model!r} is neither a folder nor a hub id like black-forest-labs/FLUX.1-dev") from None


def cpu_threads(requested: int | None, model: str | None, processes: int = 1) -> int:
    """CPU threads per process: ``requested``, else 1 for the embedded model (it is so small that more
    threads only add synchronisation, and on a shared machine they fight other jobs for cores), else
    torch's default shared out between the processes."""
    import torch

    if requested is not None:
        return requested
    if is_embedded(model):
        return 1
    return max(1, torch.get_num_threads() // processes)


def free_cores(threads: int) -> tuple[float, int]:
    """(load from other work, the cores this process may use): the 1-minute load average less what this
    process's own ``threads`` add while they run, and the cores of its CPU affinity."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: nothing to say
        load = 0.0
    return max(0.0, load - threads), cores


def busy_note(threads: int) -> str:
    """A note for a printed timing when other work left fewer free cores than torch's ``threads``: that
    timing then measures the contention as much as the model. Empty when the machine had room."""
    others, cores = free_cores(threads)
    free = cores - others
    if threads <= max(free, 0.0) + 0.5:
        return ""
    return (f" (the machine was busy: other work kept {others:.1f} of {cores} cores, so torch's {threads} "
            f"thread{'s' if threads > 1 else ''} had about {max(free, 0.0):.1f} free; timings are unreliable"
            + (", try --threads 1)" if threads > 1 else ")"))


def _error_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def failed_component(error: BaseException) -> tuple[str, str] | None:
    """(component name, class name) of the pipeline component whose loading raised ``error``, read from
    the frames of diffusers' load_sub_model, which loads one component per call; None if it is not there
    (the pipeline's index itself, or a diffusers that names that function otherwise)."""
    for link in _error_chain(error):
        tb = link.__traceback__
        found = None
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_name == "load_sub_model" and isinstance(frame.f_locals.get("name"), str):
                # class_obj, not class_name: the function reuses class_name as a loop variable.
                class_obj = frame.f_locals.get("class_obj")
                found = (frame.f_locals["name"], getattr(class_obj, "__name__", "unknown class"))
            tb = tb.tb_next
        if found is not None:
            return found
    return None


def describe_load_error(error: BaseException) -> str:
    """One line for a failed ``from_pretrained``: diffusers' message without its pointer to a stack
    trace the user never sees, or, when the hub could not be reached, that and the network's reason."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    chain = _error_chain(error)
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    network = [e for e in chain if isinstance(e, (ConnectionError, socket.gaierror, TimeoutError))]
    if network:
        return f"not in the local Hugging Face cache, and the hub cannot be reached ({first_line(network[-1])})"
    message = first_line(error).replace(_STACKTRACE_HINT, "").strip()
    if len(chain) > 1:
        message += f" (cause: {type(chain[-1]).__name__}: {first_line(chain[-1])})"
    component = failed_component(error)
    if component is not None:
        message = f"its {component[0]} ({component[1]}) failed to load: {type(error).__name__}: {message}"
    return message


# transformers' once-per-process notice when a pipeline module imports an image processor class and
# torchvision is missing; it falls back to the PIL processor, which works.
TORCHVISION_NOTICE = "requires torchvision (not installed); falling back to"
_TRANSFORMERS_IMPORT_LOGGER = "transformers.utils.import_utils"


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_NOTICE not in record.getMessage()


def needs_image_processor(model: str | None) -> bool | None:
    """Whether a pipeline loads an image processor (a feature_extractor or image_processor component):
    read from its model_index.json (a local folder, or a hub id already in the local cache); None when
    that is not known before loading."""
    if model is None or is_embedded(model):  # None: the embedded model
        return False
    index = Path(model) / "model_index.json"
    if not index.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "model_index.json")
        except Exception:  # not a repo id, no cache: unknown
            return None
        if not isinstance(cached, str):
            return None
        index = Path(cached)
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    return any(isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)
               and value[1].endswith(("ImageProcessor", "ImageProcessorPil", "FeatureExtractor"))
               for value in components.values())


@contextlib.contextmanager
def quiet_torchvision_notice(model: str | None) -> Iterator[None]:
    """While inside, transformers' "requires torchvision" notice is dropped if ``model`` loads no image
    processor (a user who "fixes" it with pip install torchvision can replace their torch); every other
    message of that logger, and the notice for a pipeline that does use an image processor, still shows."""
    if needs_image_processor(model) is not False:
        yield
        return
    notice_logger = logging.getLogger(_TRANSFORMERS_IMPORT_LOGGER)
    dropper = _DropTorchvisionNotice()
    notice_logger.addFilter(dropper)
    try:
        yield
    finally:
        notice_logger.removeFilter(dropper)


@contextlib.contextmanager
def _held_diffusers_log() -> Iterator[list[logging.LogRecord]]:
    """Hold diffusers' log records during a load: replayed if it succeeds, dropped if it fails (the
    one-line error then says what went wrong, without "will try the local cache" chatter before it)."""
    from diffusers.utils import logging as diffusers_logging

    logger = diffusers_logging.get_logger("diffusers")
    records: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    saved_handlers, saved_propagate = logger.handlers[:], logger.propagate
    logger.handlers[:] = [Hold()]
    logger.propagate = False
    try:
        yield records
    finally:
        logger.handlers[:] = saved_handlers
        logger.propagate = saved_propagate


def load_model(model: str | None, device: str, dtype: Any = None, offload: str | None = None) -> Any:
    """The embedded pipeline, or any diffusers pipeline by id or folder, on ``device`` in ``dtype``
    (None: torch_dtype's default); a one-line CommandError if it cannot be loaded, naming the component
    that failed where one did (with the original error as its ``cause``, for --traceback).

    ``offload`` ("model" or "sequential") keeps the weights on the CPU and lets diffusers move them onto
    ``device`` as they run (enable_model_cpu_offload / enable_sequential_cpu_offload) instead of moving
    the whole pipeline there.

    A folder holding an EmbeddedPipeline (e.g. one retrained with ``spectrum_cache.embedded.train``)
    loads through our own class, which diffusers cannot look up by name.
    """
    from diffusers.utils.logging import get_logger

    from .embedded import load_pipeline

    if offload is not None and offload not in OFFLOAD_MODES:
        raise usage_error(f"--offload {offload!r}: use one of {', '.join(OFFLOAD_MODES)}")
    if dtype is None:
        dtype = torch_dtype(None, device, model)
    where = "cpu" if offload else device
    get_logger(__name__).info(f"loading {model or 'the embedded model'} in {str(dtype).removeprefix('torch.')} on {device}"
                              + (f" with {offload} offload" if offload else ""))
    name = "--model " + repr(model) if model is not None else "the embedded model"
    with _held_diffusers_log() as records, quiet_torchvision_notice(model):
        try:
            if model is None or is_embedded(model):
                pipe = load_pipeline(device=where, dtype=dtype, weights=model)
            else:
                from diffusers import DiffusionPipeline

                pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype).to(where)
        except Exception as error:  # hub, network, format: all are "cannot load" to the user
            raise CommandError(f"cannot load {name}: {describe_load_error(error)}", cause=error) from None
    for record in records:
        logging.getLogger(record.name).handle(record)
    if offload is not None:
        method = {"model": "enable_model_cpu_offload", "sequential": "enable_sequential_cpu_offload"}[offload]
        try:
            getattr(pipe, method)(device=device)
        except Exception as error:  # accelerate missing, no accelerator, a pipeline that cannot offload
            raise CommandError(f"--offload {offload}: {type(pipe).__name__}.{method} failed: {first_line(error)}",
                               cause=error) from None
    return pipe
