"""Every shell block that the docs mark as runnable works as written.

A fenced ``bash`` block directly preceded by the line ``<!-- runnable -->`` (invisible on GitHub and in
the MkDocs site) is extracted from README.md and docs/*.md and run by bash (``set -euo pipefail``) in a
temporary folder, the blocks of one page in order in the same folder, on the data embedded in cardbench
(no network: the data cache and the default leaderboard are fresh folders inside the temporary folder).
A command that is a plain ``cardbench ...`` line (no shell syntax) runs through the console script's
own entry point, ``cardbench.cli.main``, inside the test process: the same argv, environment, folder
and exit code as the installed command, without a fresh interpreter importing cardbench each time.
Any other command runs in bash. The installed command itself is run in ``test_validation_cli``.
``<!-- runnable: torch -->`` marks a block that needs torch; it is skipped when torch is not installed.
Mark only quick commands (the whole set should stay within about a minute).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = re.compile(r"^\s*<!-- runnable(?::\s*(?P<needs>[\w ,]+))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")


def runnable_blocks(text: str) -> list[tuple[int, str, set[str]]]:
    """(line number, code, needs) of every fenced block preceded by a runnable marker.

    Raises:
        ValueError: a marker not followed by a ```bash fence, or an unclosed fence."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        needs = {w.strip() for w in (m.group("needs") or "").replace(",", " ").split() if w.strip()}
        f = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not f or f.group("lang") not in ("bash", "sh"):
            raise ValueError(f"line {i + 1}: a runnable marker must be followed by a ```bash block")
        indent = len(f.group("indent"))  # a block inside a list item
        j = i + 2
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 2}: unclosed code block")
        out.append((i + 2, "\n".join(ln[indent:] for ln in lines[i + 2:j]), needs))
        i = j + 1
    return out


SHELL_SYNTAX = set("|&;<>$`*?[]{}~()")


def commands(code: str) -> list[tuple[str, list[str] | None]]:
    """Split a block into its commands: (text, argv) for a plain ``cardbench`` command (argv without
    the program name), (text, None) for any other command (run by bash). A command spans lines
    while a quote is open or a line ends with a backslash."""
    out, chunk = [], ""
    for line in code.splitlines():
        chunk = f"{chunk}\n{line}" if chunk else line
        if chunk.endswith("\\"):
            continue
        try:
            words = shlex.split(chunk.replace("\\\n", " "), comments=True)  # bash drops a backslash-newline
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            plain = words[0] == "cardbench" and not SHELL_SYNTAX & set(chunk.split("#")[0])
            out.append((chunk, words[1:] if plain else None))
        chunk = ""
    if chunk:
        out.append((chunk, None))
    return out


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``cardbench ARGV`` through the console script's entry point; (exit code, stderr)."""
    from cardbench.cli import main

    err, old_argv = io.StringIO(), sys.argv
    sys.argv = ["cardbench", *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
    return code, err.getvalue()


def test_marker_parser():
    text = "x\n<!-- runnable -->\n```bash\necho a\necho b\n```\n```bash\necho not\n```\n" \
           "<!-- runnable: torch -->\n```bash\necho t\n```\n"
    assert runnable_blocks(text) == [(3, "echo a\necho b", set()), (11, "echo t", {"torch"})]
    assert runnable_blocks("- item\n\n  <!-- runnable -->\n  ```bash\n  echo a\n    b\n  ```\n") == [(4, "echo a\n  b", set())]
    with pytest.raises(ValueError, match="must be followed"):
        runnable_blocks("<!-- runnable -->\n```python\nx = 1\n```\n")


def test_command_splitter():
    code = ('cardbench score a --out "b c"   # comment\n'
            'python -c "\nprint(1)"\n'
            'cardbench show x \\\n  -f md\n'
            'cardbench score p | tee log\n'
            'cardbench score $HOME\n')
    assert commands(code) == [
        ('cardbench score a --out "b c"   # comment', ["score", "a", "--out", "b c"]),
        ('python -c "\nprint(1)"', None),
        ("cardbench show x \\\n  -f md", ["show", "x", "-f", "md"]),
        ("cardbench score p | tee log", None),
        ("cardbench score $HOME", None),
    ]


def test_in_process_cli_gives_the_installed_exit_codes(capsys):
    assert run_cli(["--version"])[0] == 0
    code, err = run_cli(["score", "--no-such-flag"])
    assert code == 2 and "--no-such-flag" in err


def test_docs_have_runnable_blocks():
    """The README's own examples are checked (the marker cannot silently disappear from it)."""
    blocks = runnable_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    assert any("cardbench score" in code for _, code, _ in blocks)


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.name)
def test_runnable_blocks(page: Path, tmp_path, monkeypatch):
    env = {**os.environ,
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "CARDBENCH_DATA": str(tmp_path / ".cache"), "CARDBENCH_LEADERBOARD": str(tmp_path / ".leaderboard"),
           "CARDBENCH_MIRROR": "", "COLUMNS": "100", "HF_HUB_OFFLINE": "1"}
    env.pop("CARDBENCH_MIRROR")
    has_torch = importlib.util.find_spec("torch") is not None
    work = tmp_path / "work"
    work.mkdir()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CARDBENCH_MIRROR", raising=False)
    monkeypatch.chdir(work)
    for line, code, needs in runnable_blocks(page.read_text(encoding="utf-8")):
        if "torch" in needs and not has_torch:
            continue
        for text, argv in commands(code):
            if argv is not None:
                rc, stderr = run_cli(argv)
            else:
                r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + text], cwd=work, env=env,
                                   capture_output=True, text=True, timeout=300)
                rc, stderr = r.returncode, r.stderr
            assert rc == 0, f"{page.name}:{line}: exit {rc}\n{text}\n--- stderr\n{stderr[-3000:]}"
