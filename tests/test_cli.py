"""`spectrum-cache generate` end to end on the embedded model, and its user errors.

Most tests run the command as a user does, in a subprocess (the console script or
`python -m spectrum_cache.cli`), with this checkout's sources first on the path.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from helpers import PROMPT, UNLOADABLE, cli_env, console_script, error_lines, run_cli
from spectrum_cache.cli import EMBEDDED_UPSCALE, main

def test_console_script_generates_with_spectrum(tmp_path: Path) -> None:
    out = tmp_path / "img.png"
    proc = run_cli("generate", PROMPT, "--steps", "12", "--out", str(out), script=True)
    assert proc.returncode == 0, proc.stderr
    # warm-up 5, then windows of 2, 2.75, 3.5: steps 0-4, 6, 8, 11
    assert "8 of 12 steps computed, 4 forecast" in proc.stdout
    assert "on cpu (1 thread)" in proc.stdout  # the embedded model's default: one thread
    assert "warning" not in proc.stderr  # every word of the prompt is known
    image = Image.open(out)
    assert image.width == image.height and image.width % EMBEDDED_UPSCALE == 0 and image.width >= 8 * EMBEDDED_UPSCALE
    assert len(image.getcolors(maxcolors=1 << 16) or range(11)) > 10  # a picture, not a flat fill


def test_compare_writes_spectrum_full_and_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "cmp.png"
    proc = run_cli("generate", PROMPT, "--steps", "20", "--compare", "--speedup", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "measured speedup" in proc.stdout and "PSNR" in proc.stdout
    assert "10 of 20 steps computed" in proc.stdout  # for_speedup(2, 20): 10 passes
    full, pair = tmp_path / "cmp-full.png", tmp_path / "cmp-compare.png"
    assert f"wrote {out}, {full}, {pair}" in proc.stdout
    spectrum_image, full_image = Image.open(out), Image.open(full)
    assert spectrum_image.size == full_image.size and spectrum_image.width % EMBEDDED_UPSCALE == 0
    assert spectrum_image.tobytes() != full_image.tobytes()  # 10 forecast steps change the picture
    width, height = Image.open(pair).size
    assert width > 2 * spectrum_image.width and height > spectrum_image.height


def test_compare_with_nothing_forecast_says_identical(tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--steps", "1", "--compare", "--out", str(tmp_path / "one.png"))
    assert proc.returncode == 0, proc.stderr
    assert "images identical" in proc.stdout and "inf" not in proc.stdout


def test_model_folder_runs_with_spectrum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spectrum_cache.embedded import weights_path

    out = tmp_path / "m.png"
    assert main(["generate", PROMPT, "--model", str(weights_path()), "--steps", "10", "--out", str(out)]) == 0
    assert "7 of 10 steps computed" in capsys.readouterr().out  # 0-4, 6, 8
    width, height = Image.open(out).size
    assert width == height < 8 * EMBEDDED_UPSCALE  # a --model image is written at its own size, not enlarged


def test_no_spectrum_runs_the_full_sampler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "full.png"
    assert main(["generate", PROMPT, "--steps", "4", "--no-spectrum", "--out", str(out)]) == 0
    assert "full sampler: 4 steps computed" in capsys.readouterr().out
    assert out.exists()


def test_unknown_words_get_one_warning_and_threads_are_set(tmp_path: Path) -> None:
    from spectrum_cache.embedded import load_pipeline

    proc = run_cli("generate", "a red cat on the left of a Dog", "--steps", "2", "--threads", "2", "--no-spectrum",
                   "--out", str(tmp_path / "w.png"))
    assert proc.returncode == 0, proc.stderr
    assert "on cpu (2 threads)" in proc.stdout
    warnings = [line for line in error_lines(proc) if "warning" in line]
    assert len(warnings) == 1
    assert "'cat'" in warnings[0] and "'of'" in warnings[0] and "'dog'" in warnings[0] and "'red'" not in warnings[0]
    vocab = [w for w in load_pipeline().tokenizer.get_vocab() if not w.startswith("[")]
    assert all(word in warnings[0] for word in vocab)


def test_help_lists_the_embedded_vocabulary() -> None:
    from spectrum_cache.embedded.data import vocabulary

    proc = run_cli("generate", "--help", script=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps the epilog
    assert "knows only these words: " + ", ".join(vocabulary()) + "." in text


def test_version() -> None:
    from importlib.metadata import version

    proc = run_cli("--version", script=True)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"spectrum-cache {version('spectrum-cache')}"


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "taken-compare.png").mkdir()
    return {"tmp": str(tmp_path)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "ten"], "argument --steps: must be an integer >= 1, got 'ten'"),
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
        (["--seed", "99999999999999999999999"], "argument --seed: must be an integer from 0 to 2**64-1"),
        (["--seed", "-1"], "argument --seed: must be an integer from 0 to 2**64-1"),
        (["--guidance-scale", "nan"], "argument --guidance-scale: must be a finite number, got 'nan'"),
        (["--speedup", "inf"], "argument --speedup: must be a finite number"),
        (["--speedup", "40"], "--speedup 40: at --steps 50 the sparsest schedule still runs the network on 6 of 50 "
                              "steps (the first 5 always run), so the highest speedup is 8.33x; use --steps 240 or more"),
        (["--speedup", "0.5"], "--speedup: speedup must be a number in [1,"),
        (["--steps", "4", "--speedup", "2"], "--speedup 2: at --steps 4 the sparsest schedule still runs the network on "
                                             "4 of 4 steps (the first 4 always run), so the highest speedup is 1.00x"),
        (["--threads", "0"], "argument --threads: must be an integer >= 1"),
        (["--device", "mps"], "--device 'mps' is not available here"),
        (["--no-spectrum", "--compare"], "--compare needs Spectrum on"),
        (["--out", "{tmp}/noext"], "has no file extension; use an image type such as .png"),
        (["--out", "{tmp}/x.notatype"], "Pillow cannot write .notatype files"),
        (["--out", "{tmp}/folder"], "is a folder; give a file name such as"),
        (["--out", "{tmp}/file/x.png"], "is a file, not a folder"),
        (["--out", "/proc/spectrum-cache-test/x.png"], "cannot write in '/proc'"),
        (["--compare", "--out", "{tmp}/taken.png"], "taken-compare.png' is a folder"),
    ],
)
def test_bad_options_fail_in_one_line_before_loading(args: list[str], message: str, places: dict[str, str]) -> None:
    if "/proc/" in " ".join(args) and not Path("/proc").is_dir():
        pytest.skip("needs /proc (Linux)")
    proc = run_cli("generate", PROMPT, *UNLOADABLE, *(a.format(**places) for a in args), timeout=120)
    lines = error_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "_positive_int" not in proc.stderr and not proc.stdout


@pytest.mark.parametrize(
    ("device", "message"),
    [("nonsense", "--device 'nonsense' is not a device name; available here: cpu"),
     ("meta", "--device 'meta': pipelines run on cpu, cuda, mps, xpu"),
     ("cuda:7", "--device 'cuda:7' is not available here")],
)
def test_bad_devices_in_process(device: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", PROMPT, *UNLOADABLE, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("/nonexistent/model-folder", 2, "--model '/nonexistent/model-folder': no such folder"),
        ("not a hub id", 2, "is neither a folder nor a hub id"),
        # HF_HUB_OFFLINE is set for the tests (conftest): diffusers' message would point to a stack trace.
        ("black-forest-labs/FLUX.1-dev", 1, "cannot load --model 'black-forest-labs/FLUX.1-dev': not in the local Hugging Face cache"),
    ],
)
def test_unloadable_models_fail_in_one_line(model: str, code: int, message: str, tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--model", model, "--out", str(tmp_path / "x.png"), timeout=120)
    assert proc.returncode == code
    assert error_lines(proc) == [line for line in error_lines(proc) if message in line] and len(error_lines(proc)) == 1
    assert "stacktrace" not in proc.stderr


def test_model_missing_online_or_offline_fails_in_one_line(tmp_path: Path) -> None:
    """Without HF_HUB_OFFLINE: an unreachable hub (or, with a network, a repository that does not
    exist) is one line too, never diffusers' "see the stacktrace above"."""
    env = {k: v for k, v in cli_env().items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-m", "spectrum_cache.cli", "generate", PROMPT, *UNLOADABLE,
                           "--out", str(tmp_path / "x.png")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert line.startswith("spectrum-cache: error: cannot load --model 'spectrum-cache-tests/no-such-model': ")
    assert "stacktrace" not in proc.stderr and "Traceback" not in proc.stderr


def _interrupt(args: list[str], when: float | str) -> subprocess.CompletedProcess[str]:
    """Start the console script and send SIGINT ``when`` seconds in (start-up: imports and loading
    take seconds), or once the progress bar shows ("sampling")."""
    proc = subprocess.Popen([console_script(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), bufsize=1)
    if when == "sampling":
        seen = ""
        while "it/s" not in seen and "s/it" not in seen:
            chunk = proc.stderr.read(1)
            assert chunk, f"the command ended before sampling: {seen[-500:]}"
            seen += chunk
    else:
        time.sleep(float(when))
    assert proc.poll() is None, "the command ended before the interrupt"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
@pytest.mark.parametrize("when", [0.5, 1.0, "sampling"])
def test_interrupt_exits_130_without_traceback(when: float | str, tmp_path: Path) -> None:
    """At any moment: an interrupt inside a third-party import (numpy, torch) used to leave a
    half-imported module and end in an ImportError traceback with status 1. (Not earlier than 0.5 s:
    on a loaded machine the interpreter may still be starting, before any code of ours can catch it.)"""
    done = _interrupt(["generate", PROMPT, "--steps", "100000", "--out", str(tmp_path / "i.png")], when)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.rstrip().endswith("spectrum-cache: interrupted")
    assert not (tmp_path / "i.png").exists()


@pytest.mark.parametrize("module", ["spectrum_cache", "spectrum_cache.cli"])
def test_python_dash_m_reports_user_errors_in_one_line(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "generate", PROMPT, "--speedup", "99"],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("spectrum-cache: error: --speedup 99: at --steps 50 the sparsest schedule still runs the "
                           "network on 6 of 50 steps")


def test_main_returns_the_exit_status_of_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate"]) == 2
    assert main(["generate", PROMPT, "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("spectrum-cache generate: error: ") for line in err)


def test_punctuation_and_case_are_not_unknown_words(tmp_path: Path) -> None:
    """The tokenizer used to split on whitespace only, so 'circle,' and 'left!' were unknown and dropped."""
    proc = run_cli("generate", "A Large RED circle, on the left!", "--steps", "2", "--no-spectrum",
                   "--out", str(tmp_path / "p.png"), script=True)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in error_lines(proc) if "warning" in line], proc.stderr
    plain = run_cli("generate", "a large red circle on the left", "--steps", "2", "--no-spectrum",
                    "--out", str(tmp_path / "q.png"), script=True)
    assert plain.returncode == 0, plain.stderr
    assert Image.open(tmp_path / "p.png").tobytes() == Image.open(tmp_path / "q.png").tobytes()
