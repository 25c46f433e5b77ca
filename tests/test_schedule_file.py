"""Schedule files: what SpectrumConfig.load refuses (naming the file and the field), and how `generate --schedule`
reports it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum
from spectrum_cache.cli import main
from spectrum_cache.integrations import SpectrumWarning


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(text)
    return path


def _with_provenance(provenance: object) -> str:
    config = {"num_inference_steps": 8, "compute_steps": [0, 1, 2, 5], "provenance": provenance}
    return json.dumps({"format": 1, "spectrum_config": config})


_CALIBRATED = {"pipeline": "FluxPipeline",
               "denoisers": {"transformer": {"class": "FluxTransformer2DModel", "config_hash": "ab12"}},
               "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", "config_hash": "cd34"},
               "cost": {"network_passes": 40, "full_run_passes": 16, "seconds": 1.5}}

MALFORMED = [
    pytest.param(_with_provenance({**_CALIBRATED, "denoisers": [{"class": "FluxTransformer2DModel"}]}),
                 r"provenance\['denoisers'\] must map each denoiser's name", id="denoisers-list"),
    pytest.param(_with_provenance({**_CALIBRATED, "scheduler": "FlowMatchEulerDiscreteScheduler"}),
                 r"provenance\['scheduler'\] must be a mapping", id="scheduler-string"),
    pytest.param(_with_provenance({**_CALIBRATED, "denoisers": {"transformer": "FluxTransformer2DModel"}}),
                 r"provenance\['denoisers'\]\['transformer'\] must be a mapping", id="denoiser-string"),
    pytest.param(_with_provenance({**_CALIBRATED, "denoisers": {"transformer": {"class": 3}}}),
                 r"\['transformer'\]\['class'\] must be a string", id="class-number"),
    pytest.param(_with_provenance({**_CALIBRATED, "cost": [1, 2]}), r"provenance\['cost'\] must be a mapping",
                 id="cost-list"),
    pytest.param(_with_provenance({"notes": json.loads("[" * 40 + "]" * 40)}), "provenance nests deeper than 32",
                 id="provenance-nested"),
    pytest.param(_with_provenance([1, 2]), "provenance must be a mapping", id="provenance-list"),
    pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="json-nested-100000"),
    pytest.param('{"format": true, "spectrum_config": {}}', "has format True", id="format-true"),
    pytest.param('{"format": 1.0, "spectrum_config": {}}', "has format 1.0", id="format-float"),
    pytest.param('{"format": "1", "spectrum_config": {}}', "has format '1'", id="format-string"),
]


@pytest.mark.parametrize("text,message", MALFORMED)
def test_load_refuses_a_malformed_file_naming_the_file_and_the_field(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ValueError, match=message) as raised:
        SpectrumConfig.load(path)
    assert str(path) in str(raised.value)


def test_load_reads_what_calibrate_writes_and_keeps_unknown_provenance_entries(tmp_path):
    extra = {**_CALIBRATED, "candidates": [{"psnr": [1.5, 2.0]}], "search": {"a": {"schedule": [0, 1]}}, "note": "x"}
    config = SpectrumConfig.load(_file(tmp_path, _with_provenance(extra)))
    assert config.provenance == extra
    assert SpectrumConfig.load(_file(tmp_path, _with_provenance({"denoisers": None, "scheduler": None}))).provenance


@pytest.mark.parametrize("text,message", MALFORMED[:2] + MALFORMED[7:9])
def test_generate_refuses_a_malformed_schedule_in_one_line(tmp_path, capsys, text, message):
    path = _file(tmp_path, text)
    assert main(["generate", "a red circle", "--schedule", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err and "spectrum-cache: error: --schedule:" in err


def test_a_schedule_of_30000_steps_loads(tmp_path):
    steps = 30_000
    schedule = list(range(0, steps, 2))
    path = _file(tmp_path, json.dumps({"format": 1, "spectrum_config": {"num_inference_steps": steps,
                                                                          "compute_steps": schedule[::-1]}}))
    assert SpectrumConfig.load(path).compute_steps == tuple(schedule)
    path.write_text(json.dumps({"format": 1, "spectrum_config": {"num_inference_steps": steps,
                                                                   "compute_steps": [*schedule, 4, 2]}}))
    with pytest.raises(ValueError, match=r"lists steps \[2, 4\] more than once"):
        SpectrumConfig.load(path)


# -- provenance: what identifies a checkpoint ---------------------------------------------------------------
def _saved_flux(folder: Path, seed: int = 0) -> None:
    from families import flux

    pipe, _ = flux()
    if seed:
        torch.manual_seed(seed)
        pipe.transformer = type(pipe.transformer).from_config(pipe.transformer.config)
    pipe.transformer.save_pretrained(folder / "transformer")
    pipe.scheduler.save_pretrained(folder / "scheduler")


def _loaded_flux(folder: Path, dtype: torch.dtype = torch.float32):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"), vae=None, text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        transformer=FluxTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=dtype))


def _schedule_of(pipe, path: Path) -> SpectrumConfig:
    from spectrum_cache.integrations.provenance import describe

    config = SpectrumConfig(num_inference_steps=12, compute_steps=(0, 1, 2, 6),
                            provenance=describe(pipe, [("transformer", pipe.transformer)]))
    config.save(path)
    return SpectrumConfig.load(path)


def test_the_same_checkpoint_from_another_folder_or_dtype_is_the_model_calibrated_on(tmp_path):
    for folder in ("a", "b"):
        _saved_flux(tmp_path / folder)
    calibrated = _loaded_flux(tmp_path / "a")
    config = _schedule_of(calibrated, tmp_path / "schedule.json")
    # The folders differ in diffusers' private config keys (_name_or_path); the weights and public keys are the same.
    other = _loaded_flux(tmp_path / "b")
    assert other.transformer.config["_name_or_path"] != calibrated.transformer.config["_name_or_path"]
    for pipe in (other, _loaded_flux(tmp_path / "b", torch.bfloat16)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SpectrumWarning)
            enable_spectrum(pipe, config)
        disable_spectrum(pipe)
    record = config.provenance["denoisers"]["transformer"]
    assert record["weights"]["samples"] and len(record["weights"]["parameters"]) == 16


def test_another_checkpoint_of_the_same_config_warns(tmp_path):
    _saved_flux(tmp_path / "a")
    _saved_flux(tmp_path / "retrained", seed=5)
    config = _schedule_of(_loaded_flux(tmp_path / "a"), tmp_path / "schedule.json")
    other = _loaded_flux(tmp_path / "retrained")
    with pytest.warns(SpectrumWarning, match=r"its transformer \(FluxTransformer2DModel\) has other weights"):
        enable_spectrum(other, config)
