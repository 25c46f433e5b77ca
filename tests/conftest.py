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
