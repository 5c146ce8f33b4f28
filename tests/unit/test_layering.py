"""The sandbox never reaches production code: nothing outside app/sandbox imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALLOWED: set[Path] = set()  # app/cli loads app.sandbox.cli lazily, by name


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_production_code_never_imports_the_sandbox() -> None:
    offenders = []
    for package in ("app", "agents", "schemas"):
        for path in (REPO / package).rglob("*.py"):
            if "sandbox" in path.relative_to(REPO).parts or path in ALLOWED:
                continue
            if any(name == "app.sandbox" or name.startswith("app.sandbox.") for name in imports(path)):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_running_a_service_command_does_not_load_the_sandbox() -> None:
    code = ("import sys; from click.testing import CliRunner; from app.cli import main; "
            "CliRunner().invoke(main, ['ingress', '--help']); CliRunner().invoke(main, ['worker', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('app.sandbox')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_the_agents_never_import_the_wiring_that_imports_them() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "agents").rglob("*.py")
                 if any(n == "app.worker_app" or n == "app.cli" or n.startswith("app.cli.") for n in imports(p))]
    assert offenders == []


def test_app_holds_wiring_and_shared_helpers_the_rest_lives_in_packages_that_say_what_it_does() -> None:
    loose = sorted(p.stem for p in (REPO / "app").glob("*.py"))
    assert loose == ["__init__", "dispatch", "jsonutil", "logs", "mapping_file", "metrics", "private_files",
                     "redact", "settings", "topics", "worker_app"]
    tools = sorted(p.stem for p in (REPO / "app" / "tools").glob("*.py"))
    assert tools == ["__init__", "checkpoint", "dead_letters", "importer", "order_log", "order_status", "reconcile",
                     "replay", "top_view"]
    for path in (REPO / "app" / "tools").rglob("*.py"):  # service functions: no click, no command line
        assert not any(n == "click" or n.startswith("app.cli") for n in imports(path)), path
