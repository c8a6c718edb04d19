"""Helpers shared by the test files (no test file imports another): module imports read from source."""
from __future__ import annotations

import ast
from pathlib import Path


def imports(path: Path, repo: Path) -> list[str]:
    """Every module name ``path`` imports, anywhere in it (inside functions too), relative ones resolved;
    ``from a import b`` yields both ``a`` and ``a.b``."""
    package = ".".join(path.relative_to(repo).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(repo).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out
