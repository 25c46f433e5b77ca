"""`spectrum-cache generate` end to end on the embedded model, and its user errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from spectrum_cache.cli import EMBEDDED_UPSCALE, main

PROMPT = "a red circle on the left and a blue square on the right"


def test_console_script_generates_with_spectrum(tmp_path):
    out = tmp_path / "img.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "spectrum_cache.cli", "generate", PROMPT, "--steps", "12", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # warm-up 5, then windows of 2, 2.75, 3.5: steps 0-4, 6, 8, 11
    assert "8 of 12 steps computed, 4 forecast" in proc.stdout
    image = Image.open(out)
    assert image.size == (32 * EMBEDDED_UPSCALE, 32 * EMBEDDED_UPSCALE)
    assert len(image.getcolors(maxcolors=1 << 16) or range(11)) > 10  # a picture, not a flat fill


def test_compare_writes_side_by_side_with_psnr_and_speedup(tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["generate", PROMPT, "--steps", "20", "--compare", "--speedup", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "measured speedup" in text and "PSNR" in text
    assert "10 of 20 steps computed" in text  # for_speedup(2, 20): 10 passes
    width, height = Image.open(out).size
    assert width > 2 * 32 * EMBEDDED_UPSCALE and height > 32 * EMBEDDED_UPSCALE


def test_model_folder_runs_with_spectrum(tmp_path, capsys):
    from spectrum_cache.embedded import weights_path

    out = tmp_path / "m.png"
    assert main(["generate", PROMPT, "--model", str(weights_path()), "--steps", "10", "--out", str(out)]) == 0
    assert "7 of 10 steps computed" in capsys.readouterr().out  # 0-4, 6, 8
    assert Image.open(out).size == (32, 32)  # a --model image is written at its own size


def test_no_spectrum_runs_the_full_sampler(tmp_path, capsys):
    out = tmp_path / "full.png"
    assert main(["generate", PROMPT, "--steps", "4", "--no-spectrum", "--out", str(out)]) == 0
    assert "full sampler: 4 steps computed" in capsys.readouterr().out
    assert out.exists()


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["generate", PROMPT, "--speedup", "40"], 2, "--speedup: speedup must be a number in [1,"),
        (["generate", PROMPT, "--device", "nonsense"], 2, "--device 'nonsense' is not usable"),
        (["generate", PROMPT, "--no-spectrum", "--compare"], 2, "--compare needs Spectrum on"),
        (["generate", PROMPT, "--model", "/nonexistent/model-folder"], 1, "cannot load --model '/nonexistent/model-folder'"),
    ],
)
def test_user_errors_print_one_line_and_exit_nonzero(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["generate"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", PROMPT, "--steps", "0"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("module", ["spectrum_cache", "spectrum_cache.cli"])
def test_python_dash_m_reports_user_errors_in_one_line(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "generate", PROMPT, "--speedup", "99"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["spectrum-cache: error: --speedup: speedup must be a number in [1, 8.333], got 99.0."]
