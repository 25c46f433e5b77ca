"""The README's families table, generated from the family builders (tests/families*.py) and the adapter
table, so it cannot drift: tests/test_families_table.py checks the README holds exactly this table.

    python tests/families_table.py          # print the table
    python tests/families_table.py --write  # rewrite it in README.md, between the families markers
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))

from families import FAMILIES  # noqa: E402
from families_controlnet import CASES as CONTROLNETS  # noqa: E402
from families_modular import MODULAR  # noqa: E402

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
START, END = "<!-- families:start -->", "<!-- families:end -->"
CFG = {
    None: "none (guidance-distilled)",
    "batched": "cond + uncond in one batched call",
    "separate": "two calls, `cache_context` cond / uncond",
    "separate-unnamed": "two calls per step, unnamed",
}


def _skips(denoiser) -> str:
    from spectrum_cache.integrations.adapters import resolve_adapter

    layout = resolve_adapter(denoiser)
    names = {id(m): n for n, m in denoiser.named_modules()}
    # Top-level names, once each: HiDream's double-stream blocks are skipped one by one.
    blocks = list(dict.fromkeys(names[id(parent._modules[child])].split(".")[0] for parent, child in layout.block_slots))
    # The single blocks among them, which the forward calls: a stand-in answers for each (adapters.STAND_INS).
    stand_ins = list(dict.fromkeys(names[id(module)].split(".")[0] for module in layout.stand_in_modules))
    text = "blocks " + ", ".join(f"`{b}`" for b in blocks)
    if stand_ins:
        text += "; stand-ins for " + ", ".join(f"`{s}`" for s in stand_ins)
    return text


def _controlnets() -> dict[str, str]:
    """Per family row, what its ControlNet pipelines (tests/test_controlnet.py) also skip on a forecast step."""
    found: dict[str, tuple[dict, dict]] = {}
    for case in CONTROLNETS.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe, _ = case.build()
        pipelines, nets = found.setdefault(case.family, ({}, {}))
        pipelines[type(pipe).__name__] = None
        net = pipe.controlnet
        union = getattr(net.nets[0] if hasattr(net, "nets") else net, "union", False)
        nets[f"`{type(net).__name__}`" + (" (Union)" if union else "")] = None
    return {family: "; with " + ", ".join(f"`{p}`" for p in pipelines) + ": the ControlNet (" + ", ".join(nets) + ")"
            for family, (pipelines, nets) in found.items()}


def rows() -> list[str]:
    out = ["| family | pipeline | modular pipeline | CFG | a forecast step skips |", "|---|---|---|---|---|"]
    controlnets = _controlnets()
    for name in sorted(FAMILIES):
        family = FAMILIES[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe, _ = family.build()
        modular = MODULAR.get(name)
        modular_name = modular.blocks.replace("AutoBlocks", "").replace("Blocks", "") + " (`" + modular.blocks + "`)" if modular else "-"
        skips = "; ".join(f"{d}: {_skips(getattr(pipe, d))}" if len(family.denoisers) > 1 else _skips(getattr(pipe, d))
                          for d in family.denoisers) + controlnets.get(name, "")
        out.append(f"| {name} | `{type(pipe).__name__}` | {modular_name} | {CFG[family.cfg]} | {skips} |")
    # Families diffusers ships only as modular pipelines (tests/test_modular.py runs them).
    for name, modular in sorted(MODULAR.items()):
        if name in FAMILIES or modular.parts is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts, _ = modular.parts()
        denoisers = [d for d in ("transformer", "unconditional_transformer") if d in parts]
        skips = "; ".join(f"{d}: {_skips(parts[d])}" if len(denoisers) > 1 else _skips(parts[d]) for d in denoisers)
        cfg = "none (guidance-distilled)" if modular.guidance == ("distilled",) else (
            "a second denoiser" if len(denoisers) > 1 else "two calls per step, cond / uncond")
        out.append(f"| {name} | - | `{modular.blocks}` | {cfg} | {skips} |")
    return out


def table() -> str:
    return "\n".join(rows())


def replaced(readme: str, new_table: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args()
    if not args.write:
        print(table())
        return
    with open(README, encoding="utf-8") as f:
        text = f.read()
    with open(README, "w", encoding="utf-8") as f:
        f.write(replaced(text, table()))


if __name__ == "__main__":
    main()
