"""The dependency rule of docs/architecture.md, checked on the source.

Every module of the project's apps belongs to one part (LAYERS, longest prefix wins). Each
module's imports are read with `ast`, those inside functions included, and an import from a
part to a part it must never import fails the test. Imports under `if TYPE_CHECKING:` are
names for type checkers only (nothing is loaded at run time) and are not counted. Known
exceptions are listed with their reason, here and in the doc, and must still exist.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("gatewaysite", "gateway", "budgets", "reports")

# module prefix -> part (docs/architecture.md, "The parts")
LAYERS = {
    "gatewaysite": "site",
    "gateway.apps": "site",
    "gateway.lifespan": "site",
    "gateway.drain": "site",
    "gateway.tasks": "site",
    "gateway.inprocbeat": "site",
    "gateway.views": "api",
    "gateway.budget_api": "api",
    "gateway.schema": "api",
    "gateway.schema_components": "api",
    "gateway.urls": "api",
    "gateway.probes": "api",
    "gateway.inbound": "api",  # /v1/messages and /v1/responses: formats in and out
    "gateway.services": "pipeline",
    "gateway.admission": "pipeline",
    "gateway.records": "pipeline",
    "gateway.operations": "pipeline",  # what differs between endpoints (base.Operation)
    "gateway.streaming": "pipeline",
    "gateway.routing": "pipeline",
    "gateway.cache": "pipeline",
    "gateway.auth": "pipeline",
    "gateway.circuit": "pipeline",
    "gateway.ledger": "pipeline",
    "gateway.inflight": "pipeline",
    "gateway.validation": "pipeline",  # the request's parsing and validation
    "gateway.providers": "providers",
    "gateway.snapshot": "config",
    "gateway.configstore": "config",
    "gateway.configversion": "config",
    "gateway.configfile": "config",
    "gateway.priceimport": "config",
    "gateway.pricehistory": "config",
    "gateway.models": "config",
    "gateway.usagerecord": "config",  # the ledger's tables, registered through gateway.models
    "gateway.partitions": "config",  # the ledger table partitioned by day (PostgreSQL)
    "gateway.admin": "config",
    "gateway.adminfilters": "config",
    "gateway.management": "config",
    "gateway.keyvars": "config",
    "gateway.outputcaps": "config",
    "gateway.ceiling": "config",  # fallback price ceilings, computed with the snapshot
    "gateway.fallbackcheck": "config",
    "gateway.metrics": "ops",
    "gateway.logs": "ops",
    "gateway.loginguard": "ops",
    "gateway.redaction": "ops",
    "gateway.fastpath": "fastpath",
    "gateway.roundtrip": "fastpath",
    "gateway.runtime": "fastpath",
    "gateway.money": "kernel",
    "gateway.errors": "kernel",
    "gateway.tokens": "kernel",
    "gateway.csvexport": "kernel",
    "gateway.spec": "kernel",  # OpenAI's vendored spec and its compiled validators
    "gateway.process": "kernel",  # the process state: plain containers, read by every part
    "gateway.redisurl": "kernel",  # REDIS_URL parsed (settings and the clients read it)
    "budgets": "budgets",
    "reports": "reports",
}

PARTS = {"site", "api", "pipeline", "providers", "config", "ops", "fastpath", "budgets"}
PARTS |= {"reports", "kernel"}

# part -> parts it must never import, each with the rule's reason
NEVER: dict[str, dict[str, str]] = {}


def _never(sources, targets, reason):
    for s in sources:
        for t in targets:
            NEVER.setdefault(s, {})[t] = reason


_never(
    PARTS - {"site", "reports"},
    {"reports"},
    "the gateway never imports reports: the request path knows no dashboard",
)
_never({"kernel"}, PARTS - {"kernel"}, "the kernel imports nothing above it")
_never(
    {"providers"},
    {"budgets", "config", "pipeline", "api"},
    "an adapter gets what it needs handed in",
)
_never({"budgets"}, {"pipeline", "api"}, "budgets never import the pipeline")
_never(
    {"fastpath"},
    {"api", "pipeline", "budgets", "reports"},
    "the fast path knows no request and no budget",
)
_never(PARTS - {"site", "api"}, {"api"}, "nothing below the API imports it")
_never({"reports"}, {"pipeline"}, "reports read records, not the request's way")

# (importer, imported) -> why it is allowed; docs/architecture.md "Known exceptions"
EXCEPTIONS = {
    ("reports.apps", "gateway.ledger"): (
        "connects the roll-ups to the ledger's drain at ready(): how reports depend one way"
    ),
    (
        "reports.management.commands.demotraffic",
        "gateway.ledger",
    ): "a demo command: it drains the ledger after sending requests, as the worker would",
    (
        "gateway.management.commands.pruneledger",
        "reports.rollups",
    ): "an operator command over both apps: it makes the roll-ups whole before deleting rows",
    (
        "gateway.management.commands.pruneledger",
        "reports.models",
    ): "the same command reads the daily roll-ups it compares with the ledger",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            found[module_name(path)] = path
    return found


MODULES = project_modules()


def layer_of(module: str) -> str | None:
    if module == "gateway":
        return "site"  # the package itself; its modules each have their own part
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        part = LAYERS.get(".".join(parts[:end]))
        if part is not None:
            return part
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for inner in node.body:
                    skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def imports_of(module: str, path: Path) -> set[str]:
    """The project modules `module` imports, anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from gateway import ledger` imports the module gateway.ledger
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in APPS and name != module:
                found.add(name)
    return found


def violations() -> list[tuple[str, str, str]]:
    found = []
    for module, path in MODULES.items():
        source = layer_of(module)
        for target in sorted(imports_of(module, path)):
            reason = NEVER.get(source, {}).get(layer_of(target))
            if reason and (module, target) not in EXCEPTIONS:
                found.append((module, target, reason))
    return found


def test_every_module_has_a_part():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"place these in LAYERS and docs/architecture.md: {missing}"


def test_no_import_breaks_the_dependency_rule():
    broken = violations()
    assert not broken, "\n".join(f"{m} imports {t}: {why}" for m, t, why in broken)


@pytest.mark.parametrize("pair", sorted(EXCEPTIONS))
def test_each_known_exception_still_exists_and_is_documented(pair):
    importer, imported = pair
    assert imported in imports_of(importer, MODULES[importer]), f"{pair} is gone: drop it"
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert f"`{importer}`" in doc and f"`{imported}`" in doc


def test_the_doc_names_every_part_of_the_code():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for prefix in LAYERS:
        if prefix != "gateway":
            path = prefix.replace(".", "/")
            assert f"`{path}" in doc, f"docs/architecture.md does not place {path}"


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The rule would be toothless if a function-level or relative import slipped past."""
    assert "gateway.budget_api" in imports_of("gateway.schema", MODULES["gateway.schema"])
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from reports import views\n"
        "def f():\n    from . import ledger\n    import reports.rollups\n"
    )
    assert imports_of("gateway.probe", probe) == {"gateway.ledger", "reports.rollups"}
    assert NEVER["pipeline"]["reports"]
