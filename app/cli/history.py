"""`magqb import`: Magento's order history into the event log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from app import topics
from app.cli.common import Progress, ensure_app_topics, fail, get_settings, magento_client


class _Date(click.ParamType):
    """A date or date-time (ISO 8601); without an offset it is UTC, as Magento's database is."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace(" ", "T", 1))
        except ValueError:
            self.fail(f"{value!r} is not a date (2026-10-01 or 2026-10-01T08:00:00)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


DATE = _Date()


@click.command("import")
@click.option("--since", type=DATE, required=True, help="Orders created at or after this (UTC unless an offset).")
@click.option("--until", type=DATE, default=None, help="Orders created before this (default: now).")
@click.option("--status", "statuses", multiple=True, metavar="S",
              help="Only orders in this Magento status (repeatable: --status complete --status processing).")
@click.option("--store-id", type=int, default=None, help="Only orders of this store view id.")
@click.option("--dry-run", is_flag=True, help="Page through Magento and count; publish nothing.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint of an interrupted run of this same range.")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
def import_orders(since: datetime, until: datetime | None, statuses: tuple[str, ...], store_id: int | None,
                  dry_run: bool, restart: bool, page_size: int) -> None:
    """Import order history from Magento's REST API into magento.orders.

    Pages through GET /V1/orders (MAGENTO_BASE_URL; OAuth 1.0a with the integration's four values,
    or Bearer MAGENTO_ACCESS_TOKEN alone) by entity_id
    (each page the orders after the last one taken) and publishes each order exactly as the webhook ingress would (source "import",
    keyed by entity_id). The worker books each order once: importing a range twice, or orders
    that also came by webhook, books nothing twice.

    Backs off on Magento's 429 and 5xx. Interrupted (Ctrl-C, a lost connection), the same command
    resumes from its checkpoint under MAGQB_DATA_DIR/imports. Exit status 0 when every order of the
    range was published, 1 when some could not be (listed, with the reason).
    """
    s = get_settings()
    if until is not None and until <= since:
        fail("--until must be after --since")
    from app.domain.order_search import OrderSearch

    search = OrderSearch(since=since, until=until, statuses=statuses, store_id=store_id, page_size=page_size)
    if not dry_run:
        ensure_app_topics(s, [topics.ORDERS])
    try:
        progress = asyncio.run(_import(s, search, dry_run, restart))
    except KeyboardInterrupt:
        fail("interrupted: run the same command again to resume from the last page published", 130)
    verb = "would publish" if dry_run else "published"
    click.echo(f"import {search.describe()}: {progress.pages} page(s), {progress.total or 0} order(s) in Magento's "
               f"range, {progress.published} {verb}, {progress.skipped} skipped (repeated by Magento), "
               f"{progress.failed} failed")
    for line in progress.failures:
        click.echo(f"  failed: {line}")
    if progress.failed:
        raise SystemExit(1)


async def _import(s: Any, search: Any, dry_run: bool, restart: bool) -> Any:
    import aiohttp

    from app.adapters import kafka_io
    from app.adapters.magento_api import MagentoApiError
    from app.tools.importer import ImportCheckpoint, run_import

    checkpoint = ImportCheckpoint(s.data_dir, search)
    resumed = None if restart else checkpoint.load()
    if resumed is not None and not dry_run:
        click.echo(f"resuming an interrupted import after entity_id {resumed.after_id} ({resumed.published} "
                   "published)", err=True)
    bar = Progress("import", unit="orders")
    producer = None if dry_run else kafka_io.producer(s.kafka_bootstrap_servers, "magqb-import", s.max_event_bytes)
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = magento_client(s, session)
        if producer is not None:
            await producer.start()
        try:
            return await run_import(client, producer, search, checkpoint, s.max_event_bytes,
                                    on_page=lambda p: bar.update(p.published + p.failed + p.skipped, p.total),
                                    resume=not restart and not dry_run)
        except MagentoApiError as exc:
            fail(f"{exc} (the checkpoint keeps what was published; the same command resumes)")
        finally:
            bar.close()
            if producer is not None:
                await kafka_io.close(producer)
