"""Structure: the run layout (stage folders, part pattern) is named once, in `storage.RunLayout`."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mmos_ray"
LAYOUT_HOME = PACKAGE / "storage.py"
# A stage folder (`01_sample`) or the part pattern (`part-*.parquet`, or an f-string's `part-` piece).
LAYOUT_LITERAL = re.compile(r"\b0[0-7]_[a-z]+|(?<![a-z])part-(?=$|[*{0-9])")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def layout_literals(source: str, label: str) -> list[str]:
    tree = ast.parse(source, filename=label)
    docstrings = _docstrings(tree)
    return [f"{label}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and LAYOUT_LITERAL.search(node.value)]


def test_no_stage_folder_or_part_pattern_literal_outside_the_layout():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != LAYOUT_HOME
             for hit in layout_literals(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "name stage folders and parts through storage.RunLayout:\n" + "\n".join(found)


def test_the_check_sees_literals_in_code_and_f_strings_but_not_in_docstrings():
    code = ('"""Reads `01_sample/part-*.parquet`."""\n'
            'def f(run, name):\n    """From `02_verify`."""\n'
            '    return run / "03_minimize", run / f"part-{name}.parquet", "part-way", "10_000"\n')
    hits = layout_literals(code, "probe.py")
    assert [h.split(": ", 1)[1] for h in hits] == ["'03_minimize'", "'part-'"]
