"""docs/memory.md's computed table is what benchmarks/memory_table.py prints from the forecasters' measured bytes."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"


def test_memory_page_shows_the_scripts_table(load_benchmark):
    table = load_benchmark("memory_table")
    text = DOC.read_text()
    shown = text.split("<!-- memory_table.py -->\n")[1].split("<!-- /memory_table.py -->")[0]
    assert shown == table.tables()


def test_measured_bytes_per_element(load_benchmark):
    measured = load_benchmark("memory_table").bytes_per_element()
    assert measured == {
        "full fit, float32 moments (`history=None`, the paper's)": (24.0, False),  # 5 float32 moments + 2 bf16
        "full fit, float16 moments (not shipped)": (14.0, False),
        "`history=4` (the default)": (8.0, False),  # issue 28's goal: at most 8
        "`history=4, state_device=\"cpu\"`": (8.0, True),  # all of it in host memory
    }
