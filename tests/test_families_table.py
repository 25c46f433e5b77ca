"""The README's families table is the one tests/families_table.py generates from the builders and the
adapter table: a family added, removed or skipping other modules changes it (rewrite it with
``python tests/families_table.py --write``)."""

from __future__ import annotations

import families_table


def test_readme_families_table_is_generated_from_the_families():
    with open(families_table.README, encoding="utf-8") as f:
        readme = f.read()
    assert families_table.START in readme and families_table.END in readme
    inside = readme.split(families_table.START, 1)[1].split(families_table.END, 1)[0].strip()
    assert inside == families_table.table(), "run: python tests/families_table.py --write"


def test_the_table_lists_every_family_once_with_what_its_forecast_steps_skip():
    from families import FAMILIES

    from families_modular import MODULAR

    rows = families_table.rows()[2:]
    modular_only = sorted(n for n, m in MODULAR.items() if n not in FAMILIES and m.parts is not None)
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == sorted(FAMILIES) + modular_only
    assert all("blocks `" in row for row in rows)
    flux = next(row for row in rows if row.startswith("| flux |"))
    assert "`FluxPipeline`" in flux and "FluxAutoBlocks" in flux
    # Only blocks are skipped: the embedders run on every step, and only single blocks have stand-ins.
    assert "blocks `transformer_blocks`, `single_transformer_blocks`; with" in flux and "`x_embedder`" not in flux
    sdxl = next(row for row in rows if row.startswith("| sdxl |"))
    assert "blocks `down_blocks`, `mid_block`, `up_blocks`; stand-ins for `mid_block`" in sdxl and "`conv_in`" not in sdxl
    assert "`FluxControlNetPipeline`: the ControlNet (" in flux and "`FluxMultiControlNetModel` (Union)" in flux


def test_replacing_the_table_keeps_the_rest_of_the_readme():
    text = f"head\n{families_table.START}\nold\n{families_table.END}\ntail\n"
    assert families_table.replaced(text, "new") == f"head\n{families_table.START}\nnew\n{families_table.END}\ntail\n"
