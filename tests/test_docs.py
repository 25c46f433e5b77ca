"""The README as a front page and the pages under docs/: length, links, the families markers, and the
code in them that runs offline (the embedded model's snippets and the demo's prompt)."""

from __future__ import annotations

import ast
import builtins
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300
# [text](target) and ![alt](target), not inside code spans.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    for section in ("## Install", "## Quickstart: FLUX.1-dev", "## Quickstart: Wan2.1 text-to-video",
                    "## What to expect", "## Supported families", "## Settings in brief", "## Troubleshooting",
                    "## Documentation"):
        assert section in headings, section
    expect = README.read_text().split("## What to expect")[1].split("\n## ")[0]
    assert "not measured by us" in expect and "24.32" in expect and "4.79x" in expect  # the paper's, labelled


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {resolved.name}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = README.read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


def test_families_markers_hold_the_families_table() -> None:
    readme = README.read_text()
    start, end = "<!-- families:start -->", "<!-- families:end -->"
    assert readme.count(start) == 1 and readme.count(end) == 1
    table = readme[readme.index(start) + len(start):readme.index(end)].strip().splitlines()
    assert table[0].startswith("| family |") and len(table) >= 2 + 18
    assert any("FluxPipeline" in row for row in table) and any("WanPipeline" in row for row in table)


def test_the_model_quickstarts_are_real_code() -> None:
    """FLUX.1-dev and Wan2.1 need weights and a GPU: here every name they import must exist, every
    variable be defined before use, and from_pretrained get a bfloat16 dtype."""
    import importlib

    blocks = [b for b in _code_blocks(README, "python") if "from_pretrained" in b]
    assert len(blocks) == 2
    for block in blocks:
        tree = ast.parse(block)
        defined: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if isinstance(node, ast.ImportFrom):
                        assert hasattr(importlib.import_module(node.module), alias.name), (node.module, alias.name)
                    defined.add((alias.asname or alias.name).split(".")[0])
                continue
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            assert used - defined - set(dir(builtins)) == set(), used - defined
            defined |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assert "dtype=torch.bfloat16" in block and '.to("cuda")' in block and "enable_model_cpu_offload()" in block


@pytest.mark.parametrize(("page", "marker"), [(README, "load_pipeline"), (ROOT / "docs" / "test-bed.md", "load_pipeline"),
                                              (ROOT / "docs" / "how-it-works.md", "SpectrumForecaster(")])
def test_the_offline_snippets_run(page: Path, marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = [b for b in _code_blocks(page, "python") if marker in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{page.name} snippet", "exec"), {"__name__": "snippet"})
    if "save(" in block:
        assert any(tmp_path.iterdir())


def test_the_demo_prompt_uses_only_words_the_embedded_model_knows() -> None:
    from spectrum_cache.embedded.data import vocabulary
    from spectrum_cache.embedded.tokenizer import WordTokenizer

    (command,) = [line for b in _code_blocks(README, "bash") for line in b.splitlines()
                  if line.startswith("spectrum-cache generate") and "--compare" in line]
    prompt = re.search(r'"([^"]+)"', command).group(1)
    words = WordTokenizer().tokenize(prompt)
    assert words and set(words) <= set(vocabulary())
    colours = {"red", "yellow", "green", "cyan", "blue", "purple"}
    assert not set(words) & {"left", "right", "top", "bottom", "center"}  # position words it ignores
    assert set(words) & colours


def test_docs_commands_name_scripts_that_exist() -> None:
    for page in PAGES:
        for script in re.findall(r"python (benchmarks/[\w/]+\.py)", page.read_text()):
            assert (ROOT / script).is_file(), f"{page.name}: {script}"
    assert os.path.isfile(ROOT / "src" / "spectrum_cache" / "embedded" / "TRAINING.md")


@pytest.mark.slow
def test_the_readme_states_the_demos_figures(load_benchmark) -> None:
    """The README's demo sentence has what benchmarks/demo_figures.py prints: the PSNR of the demo prompt
    with the defaults and with --speedup 4, and the latter's passes (a small tolerance for BLAS rounding on
    other CPUs; a changed default moves them by far more)."""
    stated = re.search(r"It printed `PSNR (\d+\.\d+) dB` against the full sampler in every run \(`--speedup 4`: "
                       r"(\d+) passes, (\d+\.\d+) dB\)", " ".join(README.read_text().split()))
    assert stated, "the README's demo sentence changed its form"
    figures = load_benchmark("demo_figures").demo_figures()
    assert figures["default"][0] == 14 and figures["--speedup 4"][0] == int(stated.group(2))
    assert abs(figures["default"][1] - float(stated.group(1))) < 0.02, figures
    assert abs(figures["--speedup 4"][1] - float(stated.group(3))) < 0.02, figures


def test_the_context_parallel_page_states_its_test_count() -> None:
    """docs/context-parallel.md says how many tests its test file runs: the number collected, and no xfails
    it no longer has."""
    import subprocess
    import sys

    text = " ".join((ROOT / "docs" / "context-parallel.md").read_text().split())
    stated = re.search(r"`pytest tests/test_context_parallel.py`: (\d+) passed", text)
    assert stated, "the page no longer states the test count"
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests" / "test_context_parallel.py")], capture_output=True, text=True,
                               cwd=ROOT)
    count = sum("::" in line for line in collected.stdout.splitlines())
    assert count == int(stated.group(1)), collected.stdout[-2000:]
    source = (ROOT / "tests" / "test_context_parallel.py").read_text()
    assert ("mark.xfail" in source) == bool(re.search(r"\d+ (strict )?xfails?\b", text))
