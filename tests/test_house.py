"""House rules a newcomer relies on (issue #20): no function over 50 lines without a reason written above it;
every third-party package the code imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "objectives", "search_spaces")
LIMIT = 50
MARKER = "# Over 50 lines on purpose"


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """(name, line of its def, length in lines) of each function in ``source`` longer than ``limit`` lines whose
    comment block just above (above its decorators, if any) does not begin with ``MARKER``."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= limit or _has_reason(lines, min([node.lineno, *(d.lineno for d in node.decorator_list)])):
            continue
        found.append((node.name, node.lineno, length))
    return found


def _has_reason(lines: list[str], first_line: int) -> bool:
    """Whether the contiguous comment lines right above line ``first_line`` (1-based) begin with ``MARKER``."""
    above = first_line - 2
    block_start = None
    while above >= 0 and lines[above].lstrip().startswith("#"):
        block_start = above
        above -= 1
    return block_start is not None and lines[block_start].lstrip().startswith(MARKER)


def test_no_function_over_50_lines_without_a_reason():
    offenders = [f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
                 for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 for name, line, length in long_functions(path.read_text())]
    assert not offenders, (f"functions over {LIMIT} lines: split them into named steps, or write "
                           f"'{MARKER}: <why>' on the line(s) above the def:\n" + "\n".join(offenders))


def test_the_checker_counts_lines_and_reads_the_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))  # def + 50 lines = 51
    long = f"def f():\n{body}"
    assert long_functions(long) == [("f", 1, LIMIT + 1)]
    assert long_functions(f"def f():\n{body}", limit=LIMIT + 1) == []
    assert long_functions(f"{MARKER}: a flat list of flags\n# reads best in one place\n{long}") == []
    assert long_functions(f"{MARKER}: decorated too\n@staticmethod\n{long}") == []
    assert long_functions(f"# some other comment\n{MARKER}\n{long}") == [("f", 3, LIMIT + 1)]
    nested = "class C:\n    def g(self):\n" + "".join(f"        y{i} = {i}\n" for i in range(LIMIT))
    assert long_functions(nested) == [("g", 2, LIMIT + 1)]


def imported_top_levels(paths) -> dict[str, str]:
    """Top-level module of each absolute import in ``paths`` -> the first file importing it (stdlib excluded)."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _distribution_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _distribution_names(project["dependencies"])
    extras = {d for group in project["optional-dependencies"].values() for d in _distribution_names(group)}
    local = {"study", "objectives", "search_spaces", "benchmarks", "tests", "conftest", "browser_support"}
    shipped_by = packages_distributions()
    undeclared = []
    for folders, declared in ((PACKAGES, core), (("benchmarks", "tests"), core | extras)):
        paths = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
        for top, first in sorted(imported_top_levels(paths).items()):
            names = {d.lower().replace("_", "-") for d in shipped_by.get(top, [top])}
            if top not in local and not names & declared:
                undeclared.append(f"{top} (distribution {', '.join(sorted(names))}), imported by {first}")
    assert not undeclared, ("imported but not declared in pyproject.toml (library code: [project] dependencies; "
                            "benchmarks and tests: dependencies or an extra):\n" + "\n".join(undeclared))
