"""What a user installs: the wheel's files and metadata, the package's lazy names, the module layout."""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the checkout (building writes egg-info and build/ beside the sources)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building needs setuptools >= 77 (SPDX license), found {setuptools.__version__}")
    work = tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(SRC, work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(work / "dist"),
                    str(work)], check=True, capture_output=True, timeout=300)
    (path,) = (work / "dist").glob("*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_license_types_and_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "spectrum_cache/py.typed" in names
    assert "spectrum_cache/bench/prompts.txt" in names
    assert "spectrum_cache/embedded/weights/model_index.json" in names
    (license_file,) = [n for n in names if n.endswith("licenses/LICENSE")]
    assert wheel.read(license_file) == (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in wheel.read(license_file) and b"Version 2.0, January 2004" in wheel.read(license_file)


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    import spectrum_cache

    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    assert metadata["Version"] == spectrum_cache.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert urls["Homepage"] == "https://github.com/spectrum-cache/spectrum-cache"
    assert urls["Paper"] == "https://arxiv.org/abs/2603.01623"
    assert "Changelog" in urls and (ROOT / "CHANGELOG.md").is_file()
    requires = metadata.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    # The bench's packages are an extra; the base install runs generate (with --compare) without them.
    assert not any(r.startswith(("matplotlib", "torchmetrics", "accelerate", "safetensors")) for r in base)
    assert len({r.split("<")[0].split(">")[0].split("=")[0] for r in base}) == len(base)  # nothing listed twice
    for extra in ("bench", "dev"):
        listed = {r.split(">")[0] for r in requires if f'extra == "{extra}"' in r}
        assert {"accelerate", "matplotlib", "torchmetrics"} <= listed
    learned = [r for r in requires if 'extra == "learned-metrics"' in r]
    assert any(r.startswith("image-reward") for r in learned) and not any("bench" in r for r in base)


def test_import_is_light_and_dir_lists_the_lazy_names() -> None:
    code = (
        "import sys, spectrum_cache\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules)\n"
        "print(heavy)\n"
        "missing = sorted(set(spectrum_cache.__all__) - set(dir(spectrum_cache)))\n"
        "print(missing)\n"
        "print(spectrum_cache.enable_spectrum.__module__, spectrum_cache.SpectrumConfig.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr
    heavy, missing, modules = done.stdout.splitlines()
    assert heavy == "[]" and missing == "[]"
    assert modules == "spectrum_cache.integrations.api spectrum_cache.config"
    import spectrum_cache

    assert {"enable_spectrum", "SpectrumForecaster", "compute_steps", "SpectrumWarning"} <= set(spectrum_cache.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spectrum_cache.nope  # noqa: B018


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module a source file imports, at the top or inside functions."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_nothing_imports_the_cli_module() -> None:
    """cli.py sits on top: bench, loading and errors sit below it, so no import cycle can form."""
    importers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name not in ("cli.py", "__main__.py") or p.parent.name != "spectrum_cache"
                 if "spectrum_cache.cli" in _imported_modules(p)]
    assert importers == []
    assert "spectrum_cache.loading" in _imported_modules(SRC / "spectrum_cache" / "bench" / "runner.py")
    assert "spectrum_cache.errors" in _imported_modules(SRC / "spectrum_cache" / "bench" / "cli.py")


def _import_time_edges(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports when it is imported: at the top, not under TYPE_CHECKING, not inside
    a function (those run later, once both modules exist)."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1] if path.name != "__init__.py"
                       else path.relative_to(SRC).parts[:-1])
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                module = ".".join([*base, *([child.module] if child.module else [])])
                for alias in child.names:
                    target = f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                    if target in modules:
                        found.add(target)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name in modules)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_the_package_has_no_import_circles() -> None:
    """No two modules need each other at import time (a circle makes import order matter, and the code hard to
    take apart)."""
    paths = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (SRC / "spectrum_cache").rglob("*.py")}
    graph = {name: _import_time_edges(path, set(paths)) - {name} for name, path in paths.items()}
    circles = []
    for start in graph:  # depth-first from each module, back to itself
        stack = [(start, (start,))]
        while stack:
            node, route = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join((*route, start)))
                elif nxt not in route and len(route) < 12:
                    stack.append((nxt, (*route, nxt)))
    assert not circles, sorted(set(circles))[:5]


def _diffusers_requirement(wheel: zipfile.ZipFile) -> Any:
    from packaging.requirements import Requirement

    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = email.message_from_bytes(wheel.read(metadata_name)).get_all("Requires-Dist")
    (diffusers,) = [Requirement(r) for r in requires if r.startswith("diffusers")]
    return diffusers


def test_installed_diffusers_is_inside_the_pin(wheel: zipfile.ZipFile) -> None:
    """The suite runs with a diffusers the requirement allows (a fresh install takes the newest)."""
    from importlib.metadata import version

    assert _diffusers_requirement(wheel).specifier.contains(version("diffusers"))


def test_diffusers_has_a_tested_lower_bound_and_no_upper_bound(wheel: zipfile.ZipFile) -> None:
    """An upper bound made pip refuse (or downgrade to fit) every newer diffusers; the lower bound is the
    release the suite was run with when it was set."""
    from packaging.version import Version

    (clause,) = _diffusers_requirement(wheel).specifier
    assert clause.operator == ">=" and Version(clause.version) >= Version("0.42.1")


def test_readme_install_section() -> None:
    """One set-up section: the two commands for a fresh machine, which torch build they give where, and
    what a GPU user does first (the README used to have two sections that contradicted each other)."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count("## Install") == 1 and "## Set up" not in readme
    install = readme[readme.index("## Install"):readme.index("\n## ", readme.index("## Install") + 1)]
    assert "Python >= 3.10" in install
    commands = install.split("```bash")[1].split("```")[0]
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]"' in commands and "\npytest" in commands
    assert "CPU" in install and "CUDA" in install and "https://pytorch.org/get-started/locally/" in install
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in install
    assert 'pip install -e ".[bench,peers]"' in install and "learned-metrics" in install
    assert "diffusers" in install and "no upper bound" in install
    # Not on the package index yet: extras only in the path form.
    assert 'install "spectrum-cache[' not in readme and "install spectrum-cache[" not in readme
    assert "@inproceedings" in readme and "2603.01623" in readme
