"""Architecture rules: benchmark and datasets import without torch, streamlit, plotly or datalad,
and dependencies flow one way (dashboard -> benchmark -> datasets; baselines -> datasets, benchmark;
reproductions -> benchmark -> datasets: nothing in benchmark or datasets knows a published study)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import cardbench

SRC = Path(cardbench.__file__).parent
HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "streamlit", "plotly", "datalad")


def _modules(sub: str) -> list[str]:
    pkg = __import__(f"cardbench.{sub}", fromlist=["x"])
    return [f"cardbench.{sub}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]


def test_benchmark_datasets_and_cli_import_with_heavy_packages_blocked():
    mods = ["cardbench.cli"] + _modules("benchmark") + _modules("datasets") + _modules("reproductions") \
        + _modules("reproductions.ankenbrand2021")
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
for m in {mods!r}:
    __import__(m)
print(len({mods!r}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(mods)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("cardbench.")}


def test_dependencies_flow_one_way():
    forbidden = {
        "datasets": ("cardbench.benchmark", "cardbench.baselines", "cardbench.dashboard", "cardbench.cli",
                     "cardbench.reproductions"),
        "benchmark": ("cardbench.baselines", "cardbench.dashboard", "cardbench.cli", "cardbench.reproductions"),
        "reproductions": ("cardbench.baselines", "cardbench.dashboard", "cardbench.cli"),
        "baselines": ("cardbench.dashboard", "cardbench.cli"),
        "dashboard": ("cardbench.baselines", "cardbench.cli"),
    }
    bad = []
    for part, banned in forbidden.items():
        for f in (SRC / part).rglob("*.py"):
            for imp in _imports(f):
                if imp.startswith(banned):
                    bad.append(f"{f.relative_to(SRC)} imports {imp}")
    assert not bad, bad


def test_benchmark_imports_no_published_study():
    """Importing every benchmark and datasets module loads nothing of cardbench.reproductions: the paper's
    pre-fill sources and reference observers are registered by the reproductions, never looked up."""
    mods = _modules("benchmark") + _modules("datasets")
    code = f"""
import sys
for m in {mods!r}:
    __import__(m)
from cardbench.benchmark.leaderboard import PREFILL_SOURCES
from cardbench.benchmark.confusion_tables import KNOWN_REFERENCES
print(sorted(n for n in sys.modules if n.startswith('cardbench.reproductions')), len(PREFILL_SOURCES), len(KNOWN_REFERENCES))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "0", "0"]
