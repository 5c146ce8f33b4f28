"""`magqb replay`: re-drive past events of magento.orders through the pipeline."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import click

from app import topics
from app.cli.common import Progress, ensure_app_topics, fail, get_settings, mapping
from app.cli.history import DATE


@click.command()
@click.option("--from-time", type=DATE, default=None, help="Replay events written at or after this time.")
@click.option("--from-offset", type=click.IntRange(min=0), default=None,
              help="Replay from this offset of every partition of magento.orders.")
@click.option("--to-time", type=DATE, default=None, help="Stop at events written at or after this time "
              "(default: the end of the log when the replay starts).")
@click.option("--order", "orders", multiple=True, metavar="ID",
              help="Only this order (entity id or increment id; repeatable).")
@click.option("--dry-run", is_flag=True, help="Say per order what would happen; call nothing, change nothing.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint of an interrupted run of this same replay.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="After publishing, follow the workers until they have handled every replayed event.")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True, help="Seconds to follow them.")
@click.option("--stuck", is_flag=True, help="Re-drive the orders stuck on their way (waiting or requested with no "
              "change for MAGQB_STUCK_AFTER_MINUTES, default the retry ladder and an hour: their command is gone). "
              "Their commands go again under new request ids, the DocNumber looked up first. Needs no --from-*.")
@click.option("--stuck-after", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MINUTES",
              help="With --stuck: the age that makes an order stuck (default MAGQB_STUCK_AFTER_MINUTES).")
def replay(from_time: datetime | None, from_offset: int | None, to_time: datetime | None, orders: tuple[str, ...],
           dry_run: bool, restart: bool, wait: bool, wait_timeout: float, stuck: bool,
           stuck_after: float | None) -> None:
    """Re-feed past order events through the pipeline (a backfill after an outage or a fix).

    Already-booked orders cost no QuickBooks call and change nothing (they are not even sent to
    the workers: the replay reads the order states first); missing ones are booked
    exactly once (their DocNumber is looked up first, in batches); parked ones are mapped again
    with the worker's current mapping; orders in progress are left to the worker. Each order
    is replayed once per run, from its newest event in the span (a cancellation, not the
    placement before it), and its credit memos and paid invoices with it (one already handled
    is a no-op; one the worker lost is looked for in QuickBooks before it is booked).

    --dry-run prints one line per order — already booked (QBO id), would book (type, DocNumber,
    total), would park (reason) — and a summary, reading the log and the order-state changelog only.

    Interrupted, the same command resumes from its checkpoint under MAGQB_DATA_DIR/replays.

    --stuck: the orders waiting with nothing in flight (`magqb_orders_stuck`, alert MagqbOrdersStuck) are
    sent on again; with --dry-run, listed.
    """
    if stuck:
        if from_time is not None or from_offset is not None or to_time is not None:
            fail("--stuck picks its orders from their states: give no --from-* or --to-time")
        asyncio.run(_unstick(get_settings(), orders, stuck_after, dry_run, wait, wait_timeout))
        return
    if stuck_after is not None:
        fail("--stuck-after goes with --stuck")
    if (from_time is None) == (from_offset is None):
        fail("give exactly one of --from-time and --from-offset")
    if to_time is not None and from_time is not None and to_time <= from_time:
        fail("--to-time must be after --from-time")
    s = get_settings()
    ensure_app_topics(s, [topics.ORDERS])
    from app.tools.replay import Selection

    sel = Selection(from_time_ms=int(from_time.timestamp() * 1000) if from_time else None, from_offset=from_offset,
                    to_time_ms=int(to_time.timestamp() * 1000) if to_time else None, orders=frozenset(orders))
    try:
        if dry_run:
            asyncio.run(_dry_run(s, sel))
        else:
            asyncio.run(_replay(s, sel, restart, wait, wait_timeout))
    except KeyboardInterrupt:
        fail("interrupted: run the same command again to resume", 130)


async def _dry_run(s: Any, sel: Any) -> None:
    from app.adapters import kafka_io
    from app.tools import order_log
    from app.tools.replay import Verdict, dry_run, summary_line

    cfg = mapping(s.mapping_file)
    bar = Progress("reading order states", unit="records")
    states = await order_log.read_states(s.kafka_bootstrap_servers, s.app_id, lambda d, t: bar.update(d, t))
    bar.close()
    names = {"booked": "already booked", "would_book": "would book", "would_park": "would park",
             "in_progress": "in progress", "would_skip": "would skip", "unreadable": "unreadable"}

    def line(v: Verdict) -> None:
        click.echo(f"{v.order_id:<12} {v.order_ref:<20} {names.get(v.outcome, v.outcome):<15} {v.detail}")

    c = kafka_io.consumer(s.kafka_bootstrap_servers, "magqb-replay-dry-run")
    await c.start()
    bar = Progress("dry run", unit="events")
    started = time.monotonic()
    try:
        counts = await dry_run(c, sel, states, cfg, s.quickbooks_realm_id, line, lambda d, t: bar.update(d, t))
    finally:
        bar.close()
        await kafka_io.close(c)
    elapsed = time.monotonic() - started
    click.echo(f"dry run: {sum(counts.values())} order(s): {summary_line(counts)} "
               f"({bar.done} events in {elapsed:.1f}s, {bar.done / max(elapsed, 1e-6):,.0f}/s); nothing was sent")


async def _replay(s: Any, sel: Any, restart: bool, wait: bool, wait_timeout: float) -> None:
    from app.adapters import kafka_io
    from app.tools import order_log
    from app.tools.replay import ReplayCheckpoint, run_replay

    bar = Progress("reading order states", unit="records")
    statuses = await order_log.order_statuses(s.kafka_bootstrap_servers, s.app_id, lambda d, t: bar.update(d, t))
    bar.close()
    checkpoint = ReplayCheckpoint(s.data_dir, sel, where=f"{s.kafka_bootstrap_servers}|{s.app_id}")
    c = kafka_io.consumer(s.kafka_bootstrap_servers, "magqb-replay")
    producer = kafka_io.producer(s.kafka_bootstrap_servers, "magqb-replay", s.max_event_bytes)
    await c.start()
    await producer.start()
    bar = Progress("replay", unit="events")
    try:
        progress = await run_replay(c, producer, sel, checkpoint, resume=not restart,
                                    on_batch=lambda p, total: bar.update(p.read, total), statuses=statuses)
    finally:
        bar.close()
        await kafka_io.close(producer)
        await kafka_io.close(c)
    click.echo(f"replay {progress.replay_id}: {progress.read} event(s) read, {progress.replayed} order(s) replayed "
               f"with {progress.later} credit memo(s) and invoice(s), "
               f"{progress.booked} already booked (nothing to do, not sent), {progress.in_progress} in progress (left "
               f"to the worker), {progress.repeated} older event(s) of the same orders left out, "
               f"{progress.unreadable} unreadable")
    if not wait or not progress.produced:
        return
    await _follow(s, progress, wait_timeout)


async def _unstick(s: Any, only: tuple[str, ...], minutes: float | None, dry_run: bool, wait: bool,
                   timeout: float) -> None:
    """`--stuck`: the stuck orders, read off their states, re-driven (or listed)."""
    from datetime import UTC
    from datetime import datetime as dt

    from app.adapters import kafka_io
    from app.domain.stuck import stuck_after
    from app.tools import order_log
    from app.tools.replay import ReplayCheckpoint, Selection, run_replay

    after = stuck_after(s.retry_ladder, minutes if minutes is not None else s.stuck_after_minutes)
    bar = Progress("reading order states", unit="records")
    states = await order_log.read_states(s.kafka_bootstrap_servers, s.app_id, lambda d, t: bar.update(d, t))
    bar.close()
    from app.domain.stuck import is_stuck

    now = dt.now(UTC)
    found = {k: st for k, st in states.items() if is_stuck(st.status, st.updated_at, now, after)
             and (not only or k in only or st.order_ref in only)}
    for key, st in sorted(found.items()):
        click.echo(f"{key:<12} {st.order_ref:<20} {st.status:<10} since {st.updated_at.isoformat(timespec='seconds')}"
                   f"  waiting for {len(st.outstanding)} answer(s)")
    if not found:
        click.echo(f"no order is stuck (waiting with no change for more than {after})")
        return
    if dry_run:
        click.echo(f"dry run: {len(found)} stuck order(s); `magqb replay --stuck` sends them on (nothing was sent)")
        return
    sel = Selection(from_time_ms=None, from_offset=0, to_time_ms=None, orders=frozenset(found))
    checkpoint = ReplayCheckpoint(s.data_dir, sel, where=f"{s.kafka_bootstrap_servers}|{s.app_id}", stuck=True)
    c = kafka_io.consumer(s.kafka_bootstrap_servers, "magqb-replay")
    producer = kafka_io.producer(s.kafka_bootstrap_servers, "magqb-replay", s.max_event_bytes)
    await c.start()
    await producer.start()
    bar = Progress("finding their events", unit="events")
    try:
        progress = await run_replay(c, producer, sel, checkpoint, resume=False, stuck=True,
                                    on_batch=lambda p, total: bar.update(p.read, total),
                                    statuses={k: st.status for k, st in found.items()})
    finally:
        bar.close()
        await kafka_io.close(producer)
        await kafka_io.close(c)
    click.echo(f"replay {progress.replay_id}: {progress.replayed} stuck order(s) sent on (of {len(found)}; one "
               "without an order event in the log cannot be: `magqb import --order` brings it from Magento)")
    if wait and progress.produced:
        await _follow(s, progress, timeout)


async def _follow(s: Any, progress: Any, timeout: float) -> None:
    """Until the workers' committed offsets pass every replayed event: then the replay is handled."""
    from app import topics
    from app.adapters import kafka_io

    targets = {int(p): o for p, o in progress.produced.items()}
    bar = Progress("workers handling the replay", total=progress.replayed + progress.later, unit="events")
    deadline = time.monotonic() + timeout
    first: dict[int, int] | None = None
    while True:
        done = await kafka_io.committed(s.kafka_bootstrap_servers, s.app_id, topics.ORDERS)
        if first is None:
            first = {p: min(done.get(p, 0), o) for p, o in targets.items()}
        behind = {p: o - done.get(p, 0) for p, o in targets.items() if done.get(p, 0) < o}
        handled = sum(min(done.get(p, 0), o) - first[p] for p, o in targets.items())
        bar.update(min(progress.replayed + progress.later, max(0, handled)))
        if not behind:
            bar.update(progress.replayed + progress.later, force=True)
            bar.close()
            click.echo("the workers have handled every replayed event (see `magqb status ORDER` for one order)", err=True)
            return
        if time.monotonic() > deadline:
            bar.close()
            fail(f"the workers have not handled the replay after {timeout:.0f}s ({sum(behind.values())} event(s) "
                 f"behind on partition(s) {','.join(map(str, sorted(behind)))}): is a worker running?", 1)
        await asyncio.sleep(1.0)
