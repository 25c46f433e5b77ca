"""docs/memory.md's computed table is what benchmarks/memory_table.py prints from the forecasters' measured bytes."""

from __future__ import annotations

from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"


def test_memory_page_shows_the_scripts_table(load_benchmark):
    table = load_benchmark("memory_table")
    text = DOC.read_text()
    shown = text.split("<!-- memory_table.py -->\n")[1].split("<!-- /memory_table.py -->")[0]
    assert shown == table.tables()


def test_measured_bytes_per_element(load_benchmark):
    script = load_benchmark("memory_table")
    for dtype in (torch.bfloat16, torch.float32):  # FLUX's bfloat16 head input; Wan's float32 one, upcast from bf16
        assert script.bytes_per_element(dtype) == {
            # 5 float32 moments + 2 bfloat16 features: at most 24 on the device, Wan included
            "full fit (`history=None`: the default, the paper's)": (24.0, False),
            "full fit, `state_device=\"cpu\"`": (24.0, True),  # all of it in host memory
            "full fit, float16 moments (not shipped)": (14.0 if dtype == torch.bfloat16 else 18.0, False),
            "`history=5` (a local fit)": (10.0, False),
            "`history=5, state_device=\"cpu\"`": (10.0, True),
        }
    # A float32 model's features are float32 values: nothing to narrow.
    assert script.bytes_per_element(torch.float32, torch.float32)["full fit (`history=None`: the default, the paper's)"] \
        == (28.0, False)


def test_memory_page_shows_the_default_table(load_benchmark):
    assert load_benchmark("memory_table").default_table() in DOC.read_text()
