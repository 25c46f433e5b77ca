"""Threads that do not oversubscribe the CPU: the embedded pipeline's calls, and the CLI's timings, which say
when other work left torch's threads too few cores."""

from __future__ import annotations

import os

import pytest
import torch

from spectrum_cache import loading


@pytest.fixture(scope="module")
def embedded():
    from spectrum_cache.embedded import load_pipeline

    return load_pipeline()


def _threads_during_a_call(pipe) -> list[int]:
    seen: list[int] = []

    def note(pipeline, step, timestep, tensors):
        seen.append(torch.get_num_threads())
        return {}

    pipe("a red circle", num_inference_steps=2, callback_on_step_end=note, output_type="latent")
    return seen


def test_an_embedded_call_runs_one_thread_and_restores_torchs_setting(embedded, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert _threads_during_a_call(embedded) == [1, 1]
        assert torch.get_num_threads() == 3
        embedded.cpu_threads = None  # the user's choice: torch's own setting
        assert _threads_during_a_call(embedded) == [3, 3]
        embedded.cpu_threads = 2
        assert _threads_during_a_call(embedded) == [2, 2] and torch.get_num_threads() == 3
    finally:
        embedded.cpu_threads = 1
        torch.set_num_threads(before)


def test_a_call_that_raises_still_restores_the_threads(embedded):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with pytest.raises(ValueError):
            embedded("a red circle", num_inference_steps=2, height=50)  # not a multiple of the patch side
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("load", "threads", "busy"), [(0.2, 1, False), (2.1, 2, False), (3.5, 2, True),
                                                        (2.6, 1, True), (1.4, 1, False)])
def test_busy_note_says_when_other_work_took_the_cores(monkeypatch, load, threads, busy):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    note = loading.busy_note(threads)
    assert bool(note) == busy, note
    if busy:
        assert "the machine was busy" in note and "of 2 cores" in note and "timings are unreliable" in note
        assert ("--threads 1" in note) == (threads > 1)


def test_the_cli_timings_carry_the_busy_note(monkeypatch, tmp_path, capsys):
    from spectrum_cache.cli import main

    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert main(["generate", "a red circle", "--steps", "6", "--compare", "--out", str(tmp_path / "x.png")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " s " in line or "speedup" in line]
    assert len(lines) == 2 and all("the machine was busy" in line for line in lines), lines
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert main(["generate", "a red circle", "--steps", "6", "--compare", "--out", str(tmp_path / "y.png")]) == 0
    assert "busy" not in capsys.readouterr().out
