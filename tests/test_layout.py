"""The house rules that a reading of the code can check: which layer imports which, how
long a command or a function may be, and rules said once that hot paths spell inline.

Parses btfs/ with `ast`; imports nothing from it but the constants compared.
"""

from __future__ import annotations

import ast
from pathlib import Path

from btfs.catalog.model import UNCHANGED_BY_STAT, LiveChild

BTFS = Path(__file__).resolve().parent.parent / "btfs"


def _tree(relative: str) -> ast.Module:
    return ast.parse((BTFS / relative).read_text(), relative)


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef) and n.name == name)


def test_the_scanner_compares_the_unchanged_by_stat_fields():
    assert LiveChild._fields[1:] == UNCHANGED_BY_STAT
    loop = _function(_tree("engine/scanner.py"), "_scan_listed")
    compares = [n for n in ast.walk(loop) if isinstance(n, ast.Compare)
                and isinstance(n.left, ast.Subscript) and isinstance(n.comparators[0], ast.Tuple)]
    assert len(compares) == 1, "the scanner's change test is one tuple compare"
    fields = [ast.unparse(e) for e in compares[0].comparators[0].elts]
    assert fields == ["kind"] + [f"st.st_{f}" for f in UNCHANGED_BY_STAT[1:]]


def test_same_content_stat_compares_the_unchanged_by_stat_fields_but_type():
    body = _function(_tree("engine/files.py"), "same_content_stat").body
    compared = {n.attr for s in body for n in ast.walk(s) if isinstance(n, ast.Attribute)}
    assert compared == {f"st_{f}" for f in UNCHANGED_BY_STAT[1:]}
