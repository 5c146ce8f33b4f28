"""Small tools: check a mapping file, create the topics, print a signed sample webhook."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from importlib import resources
from pathlib import Path

import click

from app.cli.common import app_topics, fail, get_settings
from app.cli.common import mapping as mapping_


@click.command("mapping")
@click.argument("file", type=click.Path(path_type=Path), required=False)
def mapping(file: Path | None) -> None:
    """Check a mapping file and print the mapping it gives (FILE, else MAGQB_MAPPING_FILE, else the defaults).

    Exits non-zero naming the offending key when the file cannot be used: the check
    the worker makes on start, without starting it.
    """
    from dataclasses import asdict

    path = file
    if path is None:
        from app.settings import SettingsError, load_settings

        try:
            path = load_settings().mapping_file  # the environment and .env, as the worker reads them
        except SettingsError:
            path = Path(os.environ["MAGQB_MAPPING_FILE"]) if os.environ.get("MAGQB_MAPPING_FILE") else None
    cfg = mapping_(path)
    click.echo(f"# mapping from {path or 'the built-in defaults'}: OK")
    for key, value in asdict(cfg).items():
        click.echo(f"{key} = {value}")


@click.command("create-topics")
def create_topics() -> None:
    """Create the application's Kafka topics (ingress and worker also do it on start)."""
    settings = get_settings()
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics

    specs = app_topics(settings)
    try:
        created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, specs,
                                            timeout=settings.kafka_connect_timeout_seconds))
    except (BrokerUnavailable, TopicLayoutError) as exc:
        fail(str(exc))
    for spec in specs:
        click.echo(f"{spec.name}: {'created' if spec.name in created else 'exists'} ({spec.partitions} partitions)")


@click.command("sample-webhook")
@click.option("--url", default="http://127.0.0.1:8080/webhooks/magento/new-order", show_default=True,
              help="The ingress webhook URL.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="Order JSON to send instead of the built-in sample (the blueprint's order).")
def sample_webhook(url: str, path: str | None) -> None:
    """Print a ready-to-paste curl command that posts a correctly signed order.

    The signature is the hex HMAC-SHA256 of the exact body with MAGENTO_WEBHOOK_SECRET.
    """
    from app.domain.signature import SIGNATURE_HEADER, sign

    settings = get_settings()
    if path:
        with open(path, "rb") as fh:
            raw = fh.read()
    else:
        raw = resources.files("app.samples").joinpath("blueprint_order.json").read_bytes()
    body = json.dumps(json.loads(raw), separators=(",", ":"))
    signature = sign(body.encode(), settings.magento_webhook_secret.get_secret_value())
    click.echo(
        f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json' "
        f"-H '{SIGNATURE_HEADER}: {signature}' --data-raw {shlex.quote(body)}"
    )


