"""The package's shape: each stage one subpackage, dependencies pointing down, no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dmf"
#: Lower layers first; a module may import only from its own layer or lower ones.
LAYERS = [
    {"dmf._lazy", "dmf._version", "dmf.columns", "dmf.progress", "dmf.errors", "dmf.random", "dmf.storage", "dmf.frames", "dmf.scheduler"},
    {"dmf.data"},
    {"dmf.datasets"},
    {"dmf.model"},
    {"dmf.engine"},
    {"dmf.stages"},
    {"dmf.estimators"},
    {"dmf.model_selection"},
    {"dmf"},  # the package's __init__: the public names
    {"dmf.pipeline"},
]
MODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)


def _layer(module: str) -> int:
    for level, names in enumerate(LAYERS):
        if any(module == name or (name != "dmf" and module.startswith(name + ".")) for name in names):
            return level
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py")


def _imports(module: str) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "dmf":
            found.update(f"dmf.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dmf."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("dmf"))
    return found


def test_dependencies_point_down():
    upward = [(module, imported) for module in MODULES for imported in _imports(module)
              if _layer(imported) > _layer(module)]
    assert upward == []


def test_no_private_name_is_imported_across_subpackages():
    crossing = []
    for module in MODULES:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dmf"):
                same_package = node.module.split(".")[:2] == module.split(".")[:2]
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                private = [name for name in names if any(part.startswith("_") for part in name.split(".")[1:])
                           and not name.startswith("dmf._version")]
                if private and not same_package:
                    crossing.append((module, node.module, private))
    assert crossing == []


def _resolve(imported: str) -> str:
    """The module an import names (``from dmf.data import ids`` names ``dmf.data.ids``)."""
    return imported if imported in MODULES or imported.rsplit(".", 1)[0] not in MODULES else imported.rsplit(".", 1)[0]


def test_no_import_cycle():
    """A worker unpickles whichever function it meets first: no import order may hit a cycle."""
    graph = {module: {_resolve(i) for i in _imports(module)} & set(MODULES) - {module} for module in MODULES}
    done, active = set(), []

    def visit(module):
        if module in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(module):] + [module]))
        if module in done:
            return
        active.append(module)
        for imported in sorted(graph[module]):
            if not (imported == "dmf" or module.startswith(imported + ".")):  # a package's own __init__
                visit(imported)
        active.pop()
        done.add(module)

    for module in MODULES:
        visit(module)


def test_the_library_never_loads_the_pipeline_layer():
    code = "import sys, dmf, dmf.datasets; print(sorted(m for m in sys.modules if m.startswith('dmf.pipeline')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_modules_stay_small():
    sizes = {module: len((PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text().splitlines())
             for module in MODULES if (PACKAGE.parent / (module.replace(".", "/") + ".py")).exists()}
    assert {m: n for m, n in sizes.items() if n > 420} == {}
