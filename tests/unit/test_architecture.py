"""The layout ``operators/__init__.py`` states is the layout the code has."""

from __future__ import annotations

import ast
from pathlib import Path

import operators
from operators import ADAPTER_STAGES

OPERATORS = Path(operators.__file__).parent
STAGES = {"intake", "deid", "imaging", "inference", "sr"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}


def test_every_adapter_is_listed_with_its_stage_and_imports_it() -> None:
    adapters = {p.stem for p in OPERATORS.glob("*_operator.py")}
    assert adapters == set(ADAPTER_STAGES)
    for adapter, stage in ADAPTER_STAGES.items():
        imported = imported_modules(OPERATORS / f"{adapter}.py")
        if adapter == "series_selector_operator":  # the SDK's own selector: no core of ours
            assert "monai.deploy.operators.dicom_series_selector_operator" in imported
            continue
        assert any(m.startswith(f"operators.{stage}.") for m in imported), (adapter, stage)


def test_operators_holds_the_adapters_the_stage_packages_and_the_shared_modules_only() -> None:
    modules = {p.stem for p in OPERATORS.glob("*.py")} - {"__init__"}
    packages = {p.name for p in OPERATORS.iterdir() if (p / "__init__.py").is_file()}
    assert modules == set(ADAPTER_STAGES) | {"run_report", "atomic"}
    assert packages == STAGES
