"""The planner from the command line and the bench: `spectrum-cache calibrate`, `generate --schedule` and the
bench's spectrum-planned-pK method, on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectrum_cache import SpectrumConfig
from spectrum_cache.bench.methods import parse_method
from spectrum_cache.bench.prompts import bundled_prompts, calibration_prompts
from spectrum_cache.cli import main

PROMPT = "a red circle and a green square"


def test_calibration_prompts_are_disjoint_from_the_bench_prompts():
    calibration = calibration_prompts()
    assert len(calibration) >= 4 and len(set(calibration)) == len(calibration)
    assert not set(calibration) & set(bundled_prompts())


def test_calibrate_writes_a_schedule_that_generate_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "schedule.json"
    assert main(["calibrate", "--passes", "4", "--steps", "8", "--num-prompts", "2", "--guidance", "4",
                 "--out", str(schedule)]) == 0
    said = capsys.readouterr().out
    config = SpectrumConfig.load(schedule)
    assert len(config.compute_steps) == 4 and config.num_inference_steps == 8
    assert config.provenance["pipeline"] == "EmbeddedPipeline" and config.provenance["calibration_prompts"] == 2
    assert config.provenance["guidance_scale"] == 4.0
    assert str(list(config.compute_steps)) in said and "full runs per prompt" in said
    out = tmp_path / "image.png"
    assert main(["generate", PROMPT, "--schedule", str(schedule), "--guidance-scale", "4", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "Spectrum: 4 of 8 steps computed" in said and out.exists()


@pytest.mark.parametrize("args,message", [
    (["calibrate", "--passes", "9", "--steps", "8", "--out", "s.json"], "--passes 9: at most --steps (8)"),
    (["calibrate", "--passes", "2", "--steps", "8", "--out", "."], "is a folder"),
    (["calibrate", "--passes", "2", "--steps", "8", "--out", "no/such/folder/s.json"], "does not exist"),
    (["calibrate", "--passes", "2", "--steps", "8", "--model", ".", "--out", "s.json"], "--prompts FILE is required"),
    (["calibrate", "--passes", "2", "--steps", "8", "--prompts", "missing.txt", "--out", "s.json"], "--prompts missing.txt"),
    (["calibrate", "--steps", "8", "--out", "s.json"], "--passes"),
])
def test_calibrate_refuses_bad_options_in_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generate_schedule_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "s.json"
    SpectrumConfig(num_inference_steps=10, compute_steps=(0, 1, 2, 6)).save(schedule)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    cases = [(["--schedule", str(schedule), "--steps", "12"], "calibrated for 10 steps"),
             (["--schedule", str(schedule), "--speedup", "3"], "give one of them"),
             (["--schedule", str(bad)], "not a Spectrum schedule file"),
             (["--schedule", str(tmp_path / "none.json")], "No such file")]
    for args, message in cases:
        assert main(["generate", PROMPT, *args, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_bench_spectrum_planned_calibrates_once_on_other_prompts(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["bench", "--steps", "8", "--num-prompts", "2", "--methods", "full,spectrum-planned-p4",
            "--extra-metrics", "off", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*-spectrum-planned-p4.json"))]
    assert len(records) == 2
    first = records[0]["calibration"]
    assert all(r["calibration"] == first for r in records)  # planned once
    assert first["prompts"] == 4 and first["network_passes"] > 0 and first["seconds"] > 0
    assert all(r["computed_steps"] == first["compute_steps"] and r["passes"] == 4 for r in records)
    assert all(r["prompt"] not in calibration_prompts() for r in records)
    table = (out / "table.md").read_text()
    assert "spectrum-planned-p4: steps" in table and "none of them benchmarked" in table
    saved = SpectrumConfig.load(out / "calibration" / "spectrum-planned-p4.json")
    assert list(saved.compute_steps) == first["compute_steps"]


def test_bench_refuses_calibration_prompts_among_its_own(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    calibration = tmp_path / "c.txt"
    calibration.write_text("a blue square\n")
    assert main(["bench", "--prompts", str(prompts), "--calibration-prompts", str(calibration), "--methods",
                 "full,spectrum-planned-p4", "--steps", "8", "--out", str(tmp_path / "o")]) == 2
    assert "must not be among the benchmark's prompts" in capsys.readouterr().err


def test_planned_method_names():
    method = parse_method("spectrum-planned-p10")
    assert method.planned_passes == 10 and method.expected_passes(50) == 10 and method.kind == "spectrum"
    with pytest.raises(ValueError, match="K >= 1"):
        parse_method("spectrum-planned-p0")
