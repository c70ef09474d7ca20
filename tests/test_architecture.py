"""The shape of the code, checked: floors import only downwards, modules and
functions stay small enough to read in one sitting."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pysbnn"

#: Floors from the bottom up; a module may import its own floor and the ones below.
FLOORS = [
    {"pysbnn.entropy", "pysbnn.analysis", "pysbnn._download", "pysbnn.idx", "pysbnn.validation", "pysbnn.params",
     "pysbnn.stats"},
    {"pysbnn.kernels", "pysbnn.coding"},
    {"pysbnn.quantizers", "pysbnn.levels", "pysbnn.domains", "pysbnn.functional", "pysbnn.recipe",
     "pysbnn.testing", "pysbnn.data"},
    {"pysbnn.layers", "pysbnn.binary", "pysbnn.containers", "pysbnn.serialize"},
    {"pysbnn.optim", "pysbnn.train", "pysbnn.progress", "pysbnn.mlp", "pysbnn.resnet", "pysbnn.experiment",
     "pysbnn.sweep"},
    {"pysbnn.packed"},
    {"pysbnn.report", "pysbnn.export"},
    {"pysbnn"},
]
TRAINING = set().union(*FLOORS[:5])
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(name):
    """Index of the floor holding module ``name`` (a package holds its submodules)."""
    for i, floor in enumerate(FLOORS):
        if any(name == f or name.startswith(f + ".") for f in floor if f != "pysbnn"):
            return i
    return len(FLOORS) - 1 if name == "pysbnn" else None


def imports_of(path):
    """Absolute names of the pysbnn modules ``path`` imports (at any depth of the file)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n.startswith("pysbnn") and is_module(n))
    return out


def is_module(name):
    """True when ``name`` is a module or package of pysbnn (not a function in one)."""
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_run_downwards(path):
    mod = module_name(path)
    own = floor_of(mod)
    assert own is not None, f"{mod} is on no floor: add it to FLOORS"
    for target in imports_of(path):
        if target == "pysbnn" or target.startswith(mod + "."):
            continue
        floor = floor_of(target)
        assert floor is not None and floor <= own, f"{mod} (floor {own}) imports {target} (floor {floor})"


def test_training_modules_never_import_inference():
    for path in MODULES:
        mod = module_name(path)
        if floor_of(mod) is not None and any(mod == t or mod.startswith(t + ".") for t in TRAINING):
            bad = [t for t in imports_of(path) if t.startswith(("pysbnn.packed", "pysbnn.report", "pysbnn.export"))]
            assert not bad, f"{mod} imports {bad}"


def test_importing_the_training_floors_does_not_import_packed():
    code = ("import sys, pysbnn.binary, pysbnn.train, pysbnn.resnet, pysbnn.mlp\n"
            "assert 'pysbnn.packed' not in sys.modules, sorted(m for m in sys.modules if 'packed' in m)\n"
            "assert 'numba' not in sys.modules\n"
            "import pysbnn\n"
            "pysbnn.pack\n"
            "assert 'pysbnn.packed.pack' in sys.modules\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_modules_and_functions_are_small(path):
    src = path.read_text()
    assert len(src.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(src.splitlines())} lines"
    lines = src.splitlines()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            marked = "table-like" in lines[node.lineno - 1] or "generated" in lines[node.lineno - 1]
            assert length <= MAX_FUNCTION_LINES or marked, f"{path.name}:{node.lineno} {node.name}: {length} lines"


def test_the_floor_checker_sees_an_upward_import(tmp_path):
    """The checker itself: an import from the kernels into packed is reported."""
    fake = PACKAGE / "kernels" / "_probe_upward.py"
    fake.write_text("from ..packed import pack\n")
    try:
        with pytest.raises(AssertionError, match="imports pysbnn.packed"):
            test_imports_only_run_downwards(fake)
    finally:
        fake.unlink()


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_prints_the_cpu_header(path):
    """Machines differ (AVX2 only, or AVX-512 with VPOPCNTDQ): each benchmark prints
    ``_timing.cpu_header()`` (CPU, flags, versions, load) with its numbers."""
    tree = ast.parse(path.read_text())
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "_timing"
                for a in n.names}
    assert "cpu_header" in imported and "cpu_header" in called, f"{path.name} does not print cpu_header()"
