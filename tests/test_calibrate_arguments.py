"""calibrate's seed and generator arguments, on a tiny real FluxPipeline with true CFG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spectrum_cache import calibrate
from helpers import flux_cfg


@pytest.mark.parametrize("seed", [1.5, "3", 2**64, -1, True, None])
def test_calibrate_refuses_a_seed_that_is_not_a_64_bit_unsigned_integer(seed):
    pipe, kwargs, prompts = flux_cfg()
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 18446744073709551614\], got"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, seed=seed, progress=False, **kwargs)


def test_calibrate_takes_a_numpy_seed_as_the_int_it_stands_for(tmp_path):
    pipe, kwargs, prompts = flux_cfg()
    fast = dict(passes=12, num_inference_steps=12, blend_weights=None, fits=None, progress=False)
    from_numpy = calibrate(pipe, prompts[:1], seed=np.int64(7), **fast, **kwargs)
    from_int = calibrate(pipe, prompts[:1], seed=7, **fast, **kwargs)
    assert from_numpy.provenance["seed"] == 7 and type(from_numpy.provenance["seed"]) is int
    assert from_numpy == from_int
    from_numpy.save(tmp_path / "schedule.json")  # the seed is JSON
    assert json.loads((tmp_path / "schedule.json").read_text())["spectrum_config"]["provenance"]["seed"] == 7


def test_calibrate_leaves_a_given_generator_as_it_was():
    pipe, kwargs, prompts = flux_cfg()
    generator = torch.Generator().manual_seed(11)
    before = generator.get_state()
    calibrate(pipe, prompts, passes=6, num_inference_steps=12, generator=generator, blend_weights=(0.5,),
              fits=None, progress=False, **kwargs)
    assert torch.equal(generator.get_state(), before)
    # A calibration stopped inside a pipeline call, after the noise was drawn, leaves it as it was too.
    def stop(pipe, step, timestep, tensors):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(pipe, prompts, passes=6, num_inference_steps=12, generator=generator, progress=False,
                  callback_on_step_end=stop, **kwargs)
    assert torch.equal(generator.get_state(), before)
