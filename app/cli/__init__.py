"""`magqb`: the command line of the service and its operator tools.

One module per command group; each is imported only when its command runs (or `--help` lists it),
so starting the ingress never loads the reconciler, and production commands never load the sandbox.
"""

from __future__ import annotations

import click

from app import __version__

# name → (module, attribute), in the order `magqb --help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "ingress": ("app.cli.service", "ingress"),
    "worker": ("app.cli.service", "worker"),
    "connect": ("app.cli.tokens", "connect"),
    "token": ("app.cli.tokens", "token"),
    "import": ("app.cli.history", "import_orders"),
    "follow": ("app.cli.follow", "follow"),
    "replay": ("app.cli.replay", "replay"),
    "status": ("app.cli.status", "status"),
    "reconcile": ("app.cli.reconcile", "reconcile"),
    "top": ("app.cli.top", "top"),
    "dlq": ("app.cli.dlq", "dlq"),
    "console": ("app.cli.console", "console"),
    "mapping": ("app.cli.tools", "mapping"),
    "create-topics": ("app.cli.tools", "create_topics"),
    "sample-webhook": ("app.cli.tools", "sample_webhook"),
    "sandbox": ("app.sandbox.cli", "sandbox"),
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        command: click.Command = getattr(__import__(module, fromlist=[attr]), attr)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="magqb")
def main() -> None:
    """magqb: every new Magento 2 order becomes exactly one QuickBooks Online
    SalesReceipt or Invoice, through Kafka.

    Settings come from the environment and a .env file in the current directory
    (see .env.example). A local stack is: Kafka (ops/kafka/start), `magqb sandbox`,
    `magqb ingress` and `magqb worker` — `make run` starts all four.

    Switching on for an existing store: `magqb connect`, `magqb import --since DATE`,
    then `magqb reconcile --since DATE`.
    """
