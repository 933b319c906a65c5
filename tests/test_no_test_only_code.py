"""Tests prove the code production runs: no public function of gateway/ or budgets/ is there
for the tests alone.

A test-only twin of a production step (a `reserve` beside the admission script, a `settle`
beside the spend the pipeline queues) lets a test pass while the path users take is broken.
So every public module-level function and constant (a Lua script, a schema) of the two apps
must be referred to by code outside
tests/ and bench/: by its own module, by an import of it (`from m import f`), by an
attribute of its imported module (`m.f`, aliases included), or by a dotted name in a string
(Celery's beat schedule, settings). Read with `ast`; docstrings and comments do not count.
Names that stay anyway are listed in ALLOWED with their reason, and must still exist and
still be unused by production. Methods are not checked: most are hooks that Django, DRF or
asyncio call by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("gateway", "budgets")
NOT_PRODUCTION = {"tests", "bench", ".venv", "node_modules", ".git", "migrations"}

# module:name -> why it stays although production code never refers to it
ALLOWED = {
    "gateway.partitions:convert": (
        "migration gateway.0016 calls it (migrations are not scanned: most are generated)"
    ),
    "gateway.urls:urlpatterns": "Django reads it by name from the URLconf module",
    "gateway.spec:COMMIT": (
        "the vendored spec's provenance (openai/openai-openapi commit), which the conformance "
        "suite prints with its counts; data, not code"
    ),
    "gateway.process:reset_state": (
        "gives each test a fresh process state (tests/conftest.py); a production process "
        "builds its state once and never replaces it"
    ),
    "gateway.runtime:wait_db_lanes": (
        "lets a test wait for the database lanes' queued work (ledger and config threads) "
        "before it reads the database; production never waits on them"
    ),
}


def _module(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _production_files(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*.py") if not NOT_PRODUCTION.intersection(p.relative_to(root).parts)
    ]


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _references(path: Path, module: str) -> set[tuple[str, str]]:
    """(module, name) pairs that `path` refers to."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    aliases: dict[str, str] = {}  # local name -> the module it is bound to
    refs: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for a in node.names:
                refs.add((base, a.name))
                aliases[a.asname or a.name] = f"{base}.{a.name}"
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            refs.add((module, node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            bound = aliases.get(node.value.id)
            if bound:
                refs.add((bound, node.attr))
        elif isinstance(node, ast.Attribute):
            dotted = ast.unparse(node.value)
            refs.add((dotted, node.attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docs:
                continue
            for name in re.findall(r"[A-Za-z_][\w.]*", node.value):
                owner, _, attr = name.rpartition(".")
                refs.add((owner or module, attr))
    return refs


def production_unused(root: Path = ROOT) -> set[str]:
    """`module:name` of each public function and constant in CHECKED that production code
    never refers to."""
    refs: set[tuple[str, str]] = set()
    defined: list[tuple[str, str]] = []
    for path in _production_files(root):
        module = _module(path, root)
        refs |= _references(path, module)
        if module.split(".")[0] in CHECKED:
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names = [node.name]
                elif isinstance(node, ast.Assign | ast.AnnAssign):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names = [t.id for t in targets if isinstance(t, ast.Name)]
                else:
                    names = []
                defined += [(module, n) for n in names if not n.startswith("_")]
    return {f"{m}:{f}" for m, f in defined if (m, f) not in refs}


def test_every_public_function_of_gateway_and_budgets_runs_in_production():
    unused = production_unused() - set(ALLOWED)
    assert not unused, (
        f"called from tests only (or from nothing): {sorted(unused)}. Delete it and test the "
        "function production calls, or make it the one path; if it must stay, add it to "
        "ALLOWED with the reason"
    )


def test_each_allowed_exception_is_still_test_only():
    assert production_unused() >= set(ALLOWED), "an ALLOWED entry is stale: remove it"


def test_the_checker_finds_a_twin_and_sees_each_way_of_calling(tmp_path):
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "steps.py").write_text(
        '"""twin() is named here, in a docstring: that is not a call."""\n'
        "def used_inside(): ...\n"
        "def imported(): ...\n"
        "def by_attribute(): ...\n"
        "def by_string(): ...\n"
        "def twin(): ...\n"
        "def _private(): ...\n"
        "SCRIPT = 'return 1'\n"
        "ALL = [used_inside]\n"
    )
    (tmp_path / "gateway" / "pipeline.py").write_text(
        "from gateway.steps import imported\n"
        "from gateway import steps as s\n"
        "s.by_attribute()\n"
        "_SCHEDULE = {'task': 'gateway.steps.by_string'}\n"
        "__all__ = [s.ALL]\n"
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_steps.py").write_text("from gateway.steps import twin\ntwin()\n")
    (tmp_path / "tests" / "test_script.py").write_text("from gateway.steps import SCRIPT\n")
    assert production_unused(tmp_path) == {"gateway.steps:twin", "gateway.steps:SCRIPT"}
