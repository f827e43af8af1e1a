"""The stage packages have generic names; make sure ours are the ones imported."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "models", "monitor")


@pytest.mark.parametrize("name", (*STAGES, "finpulse"))
def test_package_is_the_repositorys_own(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("stage", STAGES)
def test_stages_never_import_each_other(stage):
    others = set(STAGES) - {stage}
    offenders = []
    for path in (ROOT / stage).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in others]
    assert offenders == []


CORE = ("finpulse/storage", "finpulse/metrics.py", "finpulse/schemas.py", "finpulse/settings.py",
        "finpulse/errors.py")


def test_core_never_imports_a_stage():
    """Storage, metrics and the records are shared infrastructure: every stage may use them."""
    offenders = []
    for entry in CORE:
        paths = [ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py")
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in STAGES]
    assert offenders == []
