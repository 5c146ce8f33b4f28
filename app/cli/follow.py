"""`magqb follow`: the REST follower, one pass or every MAGQB_FOLLOW_INTERVAL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import click

from app import topics
from app.cli.common import Progress, ensure_app_topics, fail, get_settings, magento_client
from app.cli.history import DATE


@click.command("follow")
@click.option("--once", is_flag=True, help="One pass, then exit (for cron, or a store without a long-running worker).")
@click.option("--since", type=DATE, default=None,
              help="Start over from this time (UTC unless an offset) instead of the stored cursor.")
@click.option("--lookback-hours", type=click.FloatRange(0, 24 * 90), default=24.0, show_default=True,
              help="Where a follower without a cursor starts: this long before now.")
@click.option("--page-size", type=click.IntRange(1, 300), default=100, show_default=True)
def follow(once: bool, since: datetime | None, lookback_hours: float, page_size: int) -> None:
    """Read what changed in Magento and publish it, the safety net under the webhooks.

    Orders by updated_at, credit memos by created_at and paid invoices go to magento.orders exactly as
    the webhooks send them (source "rest-follow"); an order that came by webhook too is booked once.
    The cursor is kept on the topic magqb.follow-cursor, so a pass resumes where the last one stopped,
    on any host. `magqb worker` runs the follower on one worker of the group when MAGENTO_BASE_URL and
    credentials are set; this command runs it by hand, or from cron with --once.

    Exit status 0 when every row read could be published, 1 when some could not (listed).
    """
    s = get_settings()
    if not s.magento_rest_configured:
        fail("the follower needs MAGENTO_BASE_URL and the integration's credentials (MAGENTO_CONSUMER_KEY, "
             "MAGENTO_CONSUMER_SECRET, MAGENTO_ACCESS_TOKEN, MAGENTO_ACCESS_TOKEN_SECRET)")
    ensure_app_topics(s, [topics.ORDERS, topics.FOLLOW_CURSOR])
    try:
        failed = asyncio.run(_follow(s, once, since, timedelta(hours=lookback_hours), page_size))
    except KeyboardInterrupt:
        fail("interrupted: the cursor keeps every page published; the next pass continues from it", 130)
    if failed:
        raise SystemExit(1)


def _show(bar: Progress, summary: Any) -> None:
    bar.update(summary.total, None)


async def _follow(s: Any, once: bool, since: datetime | None, lookback: timedelta, page_size: int) -> int:
    import aiohttp

    from app.adapters import kafka_io
    from app.adapters.magento_api import MagentoApiError
    from app.sources.rest_follow import CursorStore, Follower

    producer = kafka_io.producer(s.kafka_bootstrap_servers, "magqb-follow", s.max_event_bytes)
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = magento_client(s, session)
        await producer.start()
        try:
            follower = Follower(client, producer, CursorStore(producer, s.kafka_bootstrap_servers, client.base_url),
                                s.max_event_bytes, lookback=lookback, page_size=page_size)
            failed = 0
            while True:
                bar = Progress("follow", unit="events")
                try:
                    summary = await follower.run_pass(since, on_page=partial(_show, bar))
                except MagentoApiError as exc:
                    if once:
                        fail(f"{exc} (the cursor keeps every page published)")
                    click.echo(f"magqb: follower pass failed: {exc}; next pass in {s.follow_interval_seconds:.0f}s",
                               err=True)
                    summary = None
                finally:
                    bar.close()
                if summary is not None:
                    cursor = summary.cursor
                    kinds = ", ".join(f"{n} {k}" for k, n in summary.published.items()) or "nothing new"
                    click.echo(f"follow: {summary.total} published ({kinds}), "
                               f"{summary.requests} request(s) to Magento, {len(summary.failed)} failed; orders read up "
                               f"to {cursor.orders.at if cursor else '?'} (UTC)")
                    for line in summary.failed:
                        click.echo(f"  failed: {line}")
                    failed = len(summary.failed)
                if once:
                    return failed
                since = None
                await asyncio.sleep(s.follow_interval_seconds)
        finally:
            await kafka_io.close(producer)
