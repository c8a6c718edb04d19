"""Helpers shared by the test files (no test file imports another): module imports read from source."""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Callable


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


class Killed(BaseException):
    """Ends a sweep where a kill would: no handler of the sweep's own (they catch Exception) stops it."""


KILLED_EXIT = 75  # the exit status of a process kill_at(..., exit=True) ended


def kill_at(boundary: str, number: int, exit: bool = False) -> Callable[[str, int], None]:
    """A sweep's ``at_boundary`` hook that kills the sweep when trial ``number`` reaches ``boundary``
    (one of core.lab.sweep.runner.BOUNDARIES): ``exit`` ends the process at once, as SIGKILL would (no cleanup,
    nothing flushed); otherwise :class:`Killed` is raised."""
    def hook(at: str, trial: int) -> None:
        if at == boundary and trial == number:
            if exit:
                os._exit(KILLED_EXIT)
            raise Killed(f"killed at {boundary} of trial {number}")
    return hook
