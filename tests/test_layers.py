"""The package's layers: one import name, a torch-free core, no import cycles, the demo on top."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# import name -> folder (pyproject.toml's package-dir)
PACKAGES = {"tdlog": ROOT / "tdlog", "tdlog.recorder": ROOT / "recorder", "tdlog.analytics": ROOT / "analytics"}
HEAVY = ("torch", "sklearn", "faiss", "matplotlib", "pyspark", "transformers", "lightning")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("statement", ["import tdlog.analytics", "import tdlog.format", "import tdlog.cli",
                                       "import tdlog"])
def test_the_engine_and_the_cli_load_no_torch_sklearn_faiss_matplotlib(statement) -> None:
    assert loaded_after(statement) == []


def test_the_recorder_loads_torch_and_no_framework_nor_engine() -> None:
    assert loaded_after("import tdlog.recorder") == ["torch"]
    assert loaded_after("import tdlog.recorder.integrations") == ["torch"]


def module_imports(*, lazy: bool = False) -> dict[str, set[str]]:
    """``{module: modules of tdlog it imports at module level}`` (``TYPE_CHECKING`` blocks included; with
    ``lazy``, the imports inside functions too)."""
    graph: dict[str, set[str]] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            is_package = path.name == "__init__.py"
            imported = set()
            tree = ast.parse(path.read_text())
            for node in (ast.walk(tree) if lazy else tree.body):
                nodes = node.body if isinstance(node, ast.If) and not lazy else [node]  # if TYPE_CHECKING: ...
                for item in nodes:
                    if isinstance(item, ast.ImportFrom):
                        base = name if is_package else name.rpartition(".")[0]
                        for _ in range(item.level - 1):
                            base = base.rpartition(".")[0]
                        target = f"{base}.{item.module}" if item.level and item.module else (item.module or base)
                        names = {f"{target}.{a.name}" for a in item.names}  # submodules, when they are
                        imported.update(names if item.module is None else names | {target})
                    elif isinstance(item, ast.Import):
                        imported.update(a.name for a in item.names)
            graph[name] = imported
    return {name: {m for m in imports if m in graph and m != name} for name, imports in graph.items()}


@pytest.mark.parametrize("lazy", [False, True])
def test_no_module_of_tdlog_imports_itself_back(lazy) -> None:
    """No cycle, even through the imports a function makes when it runs (DuckDB's MAP-D calling Spark's, the
    command line calling the demo's)."""
    graph = module_imports(lazy=lazy)
    assert "tdlog.analytics.run" in graph and "tdlog.format" in graph["tdlog.analytics.store"]
    visiting, done = [], set()

    def visit(module: str) -> None:
        if module in visiting:
            raise AssertionError(f"import cycle: {' -> '.join([*visiting[visiting.index(module):], module])}")
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_libraries_never_import_the_demo_or_the_cli() -> None:
    graph = module_imports()
    library = [m for m in graph if m.startswith(("tdlog.recorder", "tdlog.analytics")) or m == "tdlog.format"]
    for module in library:
        assert not {m for m in graph[module] if m.startswith(("tdlog.demo", "tdlog.cli"))}, module
    assert not {m for m in graph["tdlog.format"] if m.startswith(("tdlog.recorder", "tdlog.analytics"))}


def test_a_built_wheel_installs_only_tdlog_at_the_top_level(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("tdlog-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"tdlog", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                                                + ".dist-info"}
    expected = {f"{package.replace('.', '/')}/{path.relative_to(folder).as_posix()}"
                for package, folder in PACKAGES.items() for path in folder.rglob("*.py")}
    expected |= {f"tdlog/analytics/sql/{path.name}" for path in (ROOT / "sql").glob("*.sql")}
    assert expected - set(names) == set()  # every module and query file of the repository is in the wheel
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tdlog = tdlog.cli:main" in entry_points
