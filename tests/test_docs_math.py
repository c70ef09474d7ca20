"""docs/math.md is a contract: every function and test it names exists."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH = ROOT / "docs" / "math.md"


def names_in(text):
    """``(functions, tests)`` named in backticks: ``pysbnn.a.b`` and ``tests/f.py::t``."""
    ticks = re.findall(r"`([^`]+)`", text)
    functions = sorted({t for t in ticks if re.fullmatch(r"pysbnn(\.\w+)+", t)})
    tests = sorted({t for t in ticks if re.fullmatch(r"tests/\w+\.py::\w+", t)})
    return functions, tests


def resolve(dotted):
    """The object a dotted name refers to (the longest importable module, then attributes)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_functions(file, name):
    """True when ``file`` defines a test function ``name`` (at module level)."""
    path = ROOT / file
    if not path.exists():
        return False
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


test_functions.__test__ = False     # a helper, not a test

FUNCTIONS, TESTS = names_in(MATH.read_text())


def test_the_table_names_functions_and_tests():
    assert len(FUNCTIONS) >= 30 and len(TESTS) >= 30


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_named_function_exists(name):
    assert callable(resolve(name)), name


@pytest.mark.parametrize("test_id", TESTS)
def test_every_named_test_exists(test_id):
    file, name = test_id.split("::")
    assert test_functions(file, name), f"docs/math.md names {test_id}, which does not exist"


def test_the_checker_fails_on_renamed_names():
    functions, tests = names_in("| 6 | h | `pysbnn.entropy.binary_entropy_renamed` | "
                                "`tests/test_entropy.py::test_no_such_test` |")
    with pytest.raises(AttributeError):
        resolve(functions[0])
    file, name = tests[0].split("::")
    assert not test_functions(file, name)
