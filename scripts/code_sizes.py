"""Print module and function sizes of the bridge's own code (lines, including docstrings).

Used to show what a refactor did: run it on two commits and compare.
``python scripts/code_sizes.py [--top N] [PATH ...]``
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOTS = ("worker", "producers", "store", "schemas", "simulator")


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
            found.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", default=list(ROOTS))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    files = sorted(
        p
        for root in args.paths
        for p in (Path(root).rglob("*.py") if Path(root).is_dir() else [Path(root)])
    )
    modules = sorted(
        ((len(p.read_text(encoding="utf-8").splitlines()), str(p)) for p in files), reverse=True
    )
    print(f"{sum(n for n, _ in modules)} lines in {len(modules)} modules; largest:")
    for n, name in modules[: args.top]:
        print(f"  {n:6d}  {name}")
    funcs = sorted((f for p in files for f in functions(p)), reverse=True)
    print(f"{len(funcs)} functions; largest:")
    for n, name in funcs[: args.top]:
        print(f"  {n:6d}  {name}")


if __name__ == "__main__":
    main()
