"""The shape the hot paths keep (issue: smaller, flatter code): no function in
trajlab/train or trajlab/eval reaches 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trajlab"
LIMIT = 60


@pytest.mark.parametrize("folder", ["train", "eval"])
def test_no_function_reaches_sixty_lines(folder):
    long = []
    for path in sorted((PACKAGE / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines >= LIMIT:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"split these into named steps: {long}"
