"""`magqb dlq`: list, show, retry and purge dead letters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from app import topics
from app.cli.common import ensure_app_topics, fail, get_settings

# ---------------------------------------------------------------- dead letters


@click.group()
def dlq() -> None:
    """Dead letters: commands QuickBooks refused for good (or after the last retry rung).

    Each names the order, the command, every attempt and the QBO fault. Fix the
    cause (mapping, data, QBO settings), then `magqb dlq retry ID`.
    """


def _dlq_log() -> Any:
    from app.tools.dead_letters import read_log

    s = get_settings()
    ensure_app_topics(s, [topics.DEAD_LETTER])
    return s, asyncio.run(read_log(s.kafka_bootstrap_servers))


@dlq.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list dead letters already retried or purged.")
def dlq_list(show_all: bool) -> None:
    """List the open dead letters, oldest first."""
    _, log_ = _dlq_log()
    letters = log_.letters if show_all else log_.open()
    if not letters:
        click.echo("no dead letters" + ("" if show_all else " open"))
        return
    click.echo(f"{'ID':<12}  {'DEAD AT (UTC)':<19}  {'ORDER':<14}  {'COMMAND':<16}  {'REASON':<17}  TRIES  "
               f"{'STATUS':<7}  LAST ERROR")
    for d in letters:
        last = d.attempts[-1].message if d.attempts else ""
        click.echo(f"{d.id:<12}  {d.dead_at:%Y-%m-%d %H:%M:%S}  {d.order_ref[:14]:<14}  {d.command_type:<16}  "
                   f"{d.reason:<17}  {len(d.attempts):>5}  {log_.status(d):<7}  {last[:70]}")
    if log_.unreadable:
        click.echo(f"({log_.unreadable} unreadable record(s) skipped)", err=True)


@dlq.command("show")
@click.argument("letter_id")
def dlq_show(letter_id: str) -> None:
    """Show one dead letter in full: the order, the command, every attempt with its QBO fault."""
    _, log_ = _dlq_log()
    letter = log_.find(letter_id)
    if letter is None:
        fail(f"no single dead letter with an id starting {letter_id!r} (see `magqb dlq list --all`)")
    click.echo(json.dumps({"status": log_.status(letter), **letter.model_dump(mode="json")}, indent=2))


@dlq.command("retry")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every open dead letter.")
def dlq_retry(letter_ids: tuple[str, ...], retry_all: bool) -> None:
    """Send dead letters back to dispatch (after the cause was fixed). Booking stays exactly-once."""
    from app.tools.dead_letters import retry

    settings, log_ = _dlq_log()
    letters = _retriable(_pick(log_, letter_ids, retry_all))
    asyncio.run(retry(settings.kafka_bootstrap_servers, letters))
    for d in letters:
        click.echo(f"retried {d.id}: order {d.order_ref} {d.command_type}")


@dlq.command("purge")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Purge every open dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(letter_ids: tuple[str, ...], purge_all: bool, yes: bool) -> None:
    """Mark dead letters as handled without retrying them (they stay in the topic's history)."""
    from app.tools.dead_letters import purge

    settings, log_ = _dlq_log()
    letters = _pick(log_, letter_ids, purge_all)
    if not yes:
        click.confirm(f"Purge {len(letters)} dead letter(s)? Their orders will not be booked by magqb", abort=True)
    asyncio.run(purge(settings.kafka_bootstrap_servers, letters))
    click.echo(f"purged {len(letters)} dead letter(s)")


def _pick(log_: Any, ids: tuple[str, ...], everything: bool) -> list[Any]:
    if everything:
        letters = log_.open()
        if not letters:
            fail("no open dead letters")
        return list(letters)
    if not ids:
        fail("name dead letter ids (see `magqb dlq list`) or use --all")
    picked = []
    for prefix in ids:
        letter = log_.find(prefix)
        if letter is None:
            fail(f"no single dead letter with an id starting {prefix!r}")
        if log_.status(letter) != "open":
            fail(f"dead letter {letter.id} was already {log_.status(letter)}")
        picked.append(letter)
    return picked


def _retriable(letters: list[Any]) -> list[Any]:
    for letter in letters:
        why = letter.why_not_retriable()
        if why is not None:
            fail(f"dead letter {letter.id} cannot be retried: {why}; `magqb dlq purge` it once handled")
    return letters


