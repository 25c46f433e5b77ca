import importlib.util
import os
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# The test models are tiny: one thread is fastest, and it does not thrash when the machine is busy.
torch.set_num_threads(1)

# Files whose tests are long: sweeps over every family, denoiser class or scheduler, and tests that run whole
# commands or several processes. `pytest -m "not slow"` leaves them out; CI runs everything.
SLOW_FILES = {
    "test_families.py", "test_denoisers.py", "test_scheduler_sweep.py", "test_context_parallel.py",
    "test_gpu_suite.py", "test_bench_flux.py", "test_bench_messages.py", "test_checker_diagnostics.py",
    "test_cli_model_options.py", "test_cli_shared_options.py", "test_bench.py", "test_planned_cli.py",
    "test_family_shapes.py", "test_stacking.py", "test_cli.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    from diffusers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    yield


@pytest.fixture(scope="session")
def load_benchmark():
    """Imports a script of benchmarks/ by name (they are scripts, not a package)."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def poisoned_blanks(monkeypatch):
    """The stand-ins' fresh tensors (skipping.Blank) filled with NaN (integers with their largest value),
    so that any value of them reaching an output shows there; yields the count of tensors made."""
    from spectrum_cache.integrations import skipping

    made = [0]

    def poisoned(blank):
        made[0] += 1
        if blank.dtype.is_floating_point or blank.dtype.is_complex:
            return torch.full(blank.shape, float("nan"), dtype=blank.dtype, device=blank.device)
        top = True if blank.dtype == torch.bool else torch.iinfo(blank.dtype).max
        return torch.full(blank.shape, top, dtype=blank.dtype, device=blank.device)

    monkeypatch.setattr(skipping.Blank, "make", poisoned)
    yield made
