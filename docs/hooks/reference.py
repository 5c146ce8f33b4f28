"""An MkDocs hook: before each build, docs/reference/cli.md and settings.md are written from the code itself —
the click commands' own help and the pydantic settings with the comments above each field — so neither can
drift from what magqb does. Both are generated (git-ignored), never edited."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "reference"


def on_pre_build(config: Any) -> None:
    sys.path.insert(0, str(REPO))
    OUT.mkdir(exist_ok=True)
    (OUT / "cli.md").write_text(cli_reference())
    (OUT / "settings.md").write_text(settings_reference())


def cli_reference() -> str:
    import click

    from app.cli import COMMANDS, main

    parts = ["# CLI reference\n\n", "Generated from the `magqb` commands' own help (`magqb COMMAND --help`).\n\n"]
    root = click.Context(main, info_name="magqb")

    def describe(command: click.Command, ctx: click.Context, depth: int) -> None:
        parts.append(f"{'#' * depth} `{ctx.command_path}`\n\n```text\n{command.get_help(ctx).strip()}\n```\n\n")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    describe(sub, click.Context(sub, info_name=name, parent=ctx), min(depth + 1, 4))

    parts.append(f"## `magqb`\n\n```text\n{main.get_help(root).strip()}\n```\n\n")
    for name in COMMANDS:
        command = main.get_command(root, name)
        if command is not None:
            describe(command, click.Context(command, info_name=name, parent=root), 2)
    return "".join(parts)


def _comments_above_fields(source: str) -> dict[str, str]:
    """The comment lines right above each field of `class Settings`: where the settings are explained."""
    lines = source.splitlines()
    tree = ast.parse(source)
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    found: dict[str, str] = {}
    for node in settings.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comments = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                comments.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            found[node.target.id] = " ".join(comments)
    return found


def settings_reference() -> str:
    from pydantic import SecretStr

    from app.settings import Settings, _env_name

    # The hand-written page explains each setting in a user's words; it must name every one the code reads.
    written = (REPO / "docs" / "configuration.md").read_text()
    undocumented = [_env_name(n) for n in Settings.model_fields if f"`{_env_name(n)}`" not in written]
    if undocumented:
        raise SystemExit(f"docs/configuration.md does not explain {', '.join(undocumented)}: add a row for each")

    comments = _comments_above_fields((REPO / "app" / "settings.py").read_text())
    rows = ["# Settings reference\n\n",
            "Generated from `app/settings.py`: every setting magqb reads from the environment (or `.env`), its "
            "type, its default and what the code says of it. Secrets are marked; their defaults are never shown.\n\n",
            "| variable | type | default | meaning |\n|---|---|---|---|\n"]
    for name, field in Settings.model_fields.items():
        env = _env_name(name)
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        if field.is_required():
            default = "**required**"
        elif field.annotation is SecretStr:
            default = "(secret)"
        else:
            default = f"`{field.default!r}`" if field.default not in (None, "") else "unset"
        meaning = (comments.get(name) or field.description or "").replace("|", "\\|")
        rows.append(f"| `{env}` | `{kind}` | {default} | {meaning} |\n")
    return "".join(rows)
