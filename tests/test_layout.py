"""The package's layout: one-way imports between its parts, no loops, torch only on the
training side, and a stated reason for every long module.

The parts are the subpackages of `unicure_rt` plus `shared`, the few top-level modules every
part uses (errors, defaults, progress, cache, outputs, provenance, onnx_runtime). `ALLOWED` is
the one table of arrows: a part may import itself, `shared` and the parts it names. Every
import counts, also one inside a function or under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unicure_rt"
SHARED = {"errors", "defaults", "progress", "cache", "outputs", "provenance", "onnx_runtime"}
BELOW_SCORING = {"bundle", "patients", "drugs", "runtime"}
ALLOWED = {
    "shared": set(),
    "bundle": set(),
    "patients": set(),
    "drugs": {"bundle"},
    "runtime": {"bundle", "patients", "drugs"},
    "scoring": BELOW_SCORING,
    "analysis": BELOW_SCORING | {"scoring"},
    "engines": BELOW_SCORING | {"scoring"},
    "kit": {"bundle"},
    "train": BELOW_SCORING | {"scoring"},  # it writes bundles; nothing imports it but the CLI
    "cli": {"bundle", "patients", "drugs", "runtime", "scoring", "analysis", "engines", "kit"}
    | {"train"},
}
TORCH = {"torch", "peft"}
TORCH_SIDE = "train"
MAX_LINES = 400
LONG_REASON = "Longer than 400 lines because"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "data" not in path.relative_to(PACKAGE).parts
}


def part(module: str) -> str:
    names = module.split(".")
    if len(names) == 1 or names[1] in SHARED:
        return "shared"
    return names[1]


def imported(module: str) -> set[str]:
    """The unicure_rt modules that `module` imports (a `from X import name` counts as X.name
    where that is a module, else as X)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` folders up
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*above, *([base] if base else [])])
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "unicure_rt")
    return found


def test_the_walk_sees_imports_inside_functions():
    """`cli.score` imports the pipeline only inside its command function; the walk sees it."""
    assert "unicure_rt.scoring.pipeline" in imported("unicure_rt.cli.score")
    assert part("unicure_rt.scoring.pipeline") == "scoring"
    assert part("unicure_rt.errors") == "shared"


def test_the_table_names_every_part():
    parts = {part(module) for module in MODULES}
    assert parts == set(ALLOWED), parts ^ set(ALLOWED)


def test_every_import_follows_an_allowed_arrow():
    wrong = sorted(
        f"{module} imports {target}"
        for module in MODULES
        for target in imported(module)
        if part(target) not in {part(module), "shared"} | ALLOWED[part(module)]
    )
    assert wrong == []


def test_the_arrows_have_no_loop():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in ALLOWED[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    assert [name for name in ALLOWED if reaches(name, name, set())] == []


def test_no_module_import_loop():
    """No module imports, directly or through others, a module that imports it back (lazy
    imports included: a loop only hidden by importing late is still a loop)."""
    graph = {module: {t for t in imported(module) if t in MODULES} for module in MODULES}
    # a package's __init__ is imported with each of its modules; it imports none of them
    loops = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    loops.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert loops == []


def test_only_the_training_side_imports_torch():
    wrong = []
    for module, path in MODULES.items():
        if part(module) == TORCH_SIDE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            wrong += [f"{module} imports {n}" for n in names if n.split(".")[0] in TORCH]
    assert wrong == []


BLOCK_TORCH = """
import importlib, importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {torch!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
for module in {modules!r}:
    importlib.import_module(module)
assert not {torch!r} & set(sys.modules), sorted({torch!r} & set(sys.modules))
print(len({modules!r}))
"""


def test_every_clinic_module_imports_without_torch():
    clinic = sorted(module for module in MODULES if part(module) != TORCH_SIDE)
    assert len(clinic) > 60, clinic  # the walk found the package
    code = BLOCK_TORCH.format(torch=TORCH, modules=clinic)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[-1] == str(len(clinic))


def test_every_subpackage_says_what_it_holds():
    packages = [module for module, path in MODULES.items() if path.name == "__init__.py"]
    assert [p for p in packages if not ast.get_docstring(ast.parse(MODULES[p].read_text()))] == []


def test_long_modules_say_why():
    long = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
        for path in MODULES.values()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    unexplained = sorted(
        name
        for name in long
        if LONG_REASON not in (ast.get_docstring(ast.parse((PACKAGE / name).read_text())) or "")
    )
    assert unexplained == [], {name: long[name] for name in unexplained}
