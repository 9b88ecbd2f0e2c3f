"""Architecture rules: benchmark and datasets import without torch, streamlit, plotly or datalad,
and dependencies flow one way (dashboard -> benchmark -> datasets; baselines -> datasets, benchmark)."""

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
    mods = ["cardbench.cli"] + _modules("benchmark") + _modules("datasets")
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
        "datasets": ("cardbench.benchmark", "cardbench.baselines", "cardbench.dashboard", "cardbench.cli"),
        "benchmark": ("cardbench.baselines", "cardbench.dashboard", "cardbench.cli"),
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
