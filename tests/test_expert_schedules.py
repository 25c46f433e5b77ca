"""One schedule per denoiser (Wan2.2's two experts, an SDXL refiner's range): SpectrumConfig's per-denoiser
compute_steps, their file, and enable_spectrum applying each to its own denoiser's trajectory."""

from __future__ import annotations

import json

import pytest
import torch

from families import flux, wan22
from spectrum_cache import SpectrumConfig, compute_steps, enable_spectrum, spectrum_summary

# wan22(): boundary_ratio 0.6 gives the first 8 of 12 steps to transformer, the last 4 to transformer_2.
EXPERTS = {"transformer": (0, 1, 3, 6), "transformer_2": (0, 2)}
SPLIT = {"transformer": 8, "transformer_2": 4}


class _LeafCount:
    """Counts calls of a leaf module inside a block: the network passes that really ran."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def test_per_denoiser_schedules_are_checked_and_sorted():
    config = SpectrumConfig(num_inference_steps=12, compute_steps={"transformer": [6, 0, 1], "transformer_2": (0,)},
                            denoiser_steps=SPLIT)
    assert config.per_denoiser and config.compute_steps == {"transformer": (0, 1, 6), "transformer_2": (0,)}
    assert compute_steps(config, 4, denoiser="transformer_2") == [0]
    assert hash(config) == hash(config.replace())  # still a hashable frozen config


@pytest.mark.parametrize("fields,message", [
    (dict(compute_steps=EXPERTS), "set num_inference_steps"),
    (dict(num_inference_steps=12, compute_steps={}), "names no denoiser"),
    (dict(num_inference_steps=12, compute_steps={"transformer": (0,), "transformer_2": (1, 2)}),
     r"compute_steps\['transformer_2'\]: compute_steps must include step 0"),
    (dict(num_inference_steps=12, compute_steps={"transformer": (0,), 3: (0,)}), "keys must be denoiser names"),
    (dict(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps={"transformer": 8}),
     "denoiser_steps must name the denoisers compute_steps names"),
    (dict(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps={"transformer": 8, "transformer_2": 2}),
     r"compute_steps\['transformer_2'\]: compute_steps entry must be an integer in \[0, 1\], got 2"),
    (dict(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps={"transformer": 13, "transformer_2": 4}),
     r"denoiser_steps\['transformer'\] must be an integer in \[1, 12\]"),
    (dict(num_inference_steps=12, compute_steps=(0, 1), denoiser_steps=SPLIT), "denoiser_steps goes with one schedule"),
])
def test_bad_per_denoiser_schedules_are_refused_by_field(fields, message):
    with pytest.raises(ValueError, match=message):
        SpectrumConfig(**fields)


def test_per_denoiser_schedules_save_and_load_as_one_file(tmp_path):
    config = SpectrumConfig(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps=SPLIT, blend_weight=0.75,
                            provenance={"pipeline": "WanPipeline"})
    path = tmp_path / "experts.json"
    config.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == 2 and data["spectrum_config"]["compute_steps"] == {k: list(v) for k, v in EXPERTS.items()}
    assert SpectrumConfig.load(path) == config
    single = SpectrumConfig(num_inference_steps=12, compute_steps=(0, 4))
    single.save(path)  # a one-schedule config is still written as format 1, as earlier versions read it
    data = json.loads(path.read_text())
    assert data["format"] == 1 and "denoiser_steps" not in data["spectrum_config"]
    assert SpectrumConfig.load(path) == single


@pytest.mark.filterwarnings("ignore:.*has hooks of its own")  # the counters are those hooks
def test_each_expert_runs_its_own_schedule_and_the_budget_is_exact():
    pipe, kwargs = wan22()
    counts = {name: _LeafCount(getattr(pipe, name).blocks[0].ffn.net[0].proj) for name in EXPERTS}
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps=SPLIT))
    pipe(**kwargs)
    by_expert = {}
    for branch in spectrum_summary(pipe).branches:
        by_expert.setdefault(branch.denoiser, set()).add((branch.computed_steps, branch.num_inference_steps))
    assert by_expert == {"transformer": {((0, 1, 3, 6), 8)}, "transformer_2": {((0, 2), 4)}}
    # cond and uncond run separately: two network passes per compute step
    assert {name: c.calls for name, c in counts.items()} == {"transformer": 2 * 4, "transformer_2": 2 * 2}


def test_per_denoiser_schedules_refuse_another_split_or_call_by_name():
    pipe, kwargs = wan22()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=EXPERTS, denoiser_steps=SPLIT))
    with pytest.raises(ValueError, match="planned for pipeline calls of 12 steps .transformer 8, transformer_2 4., "
                                         "and this call has 10 steps, of which transformer runs"):
        pipe(**{**kwargs, "num_inference_steps": 10})
    pipe.register_to_config(boundary_ratio=0.5)  # moves the switch: transformer runs 9 of 12
    with pytest.raises(ValueError, match=r"compute_steps\['transformer'\]\) was planned for its 8 steps of a 12-step "
                                         "pipeline call, and transformer runs 9 steps here"):
        pipe(**kwargs)


def test_enable_refuses_schedules_that_do_not_name_the_pipelines_denoisers():
    pipe, _ = wan22()
    with pytest.raises(ValueError, match="no schedule for transformer_2"):
        enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps={"transformer": (0, 3)}))
    other, _ = flux()
    with pytest.raises(ValueError, match="no denoiser transformer_2"):
        enable_spectrum(other, SpectrumConfig(num_inference_steps=12, compute_steps=EXPERTS))
    with pytest.raises(ValueError, match="a bare denoiser takes one schedule"):
        enable_spectrum(other.transformer, SpectrumConfig(num_inference_steps=12, compute_steps=EXPERTS))
    assert all(not getattr(m, "_diffusers_hook", None) or m._diffusers_hook.get_hook("spectrum_cache") is None
               for m in (pipe.transformer, pipe.transformer_2, other.transformer))
