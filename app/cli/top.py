"""`magqb top`: a live terminal view of the books' health, from the processes' /metrics."""

from __future__ import annotations

import contextlib
import select
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import RenderableType

    from app.tools.top_view import View


def _fmt_seconds(seconds: float) -> str:
    if seconds < 1:
        return "0 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(value: float | None) -> str:
    return "…" if value is None else f"{value:,.0f}"


def render(v: View) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from app.tools.top_view import QUOTA_PER_MINUTE
    head = Text()
    oldest = v.oldest_unbooked_seconds
    head.append("oldest unbooked order: ", style="bold")
    head.append(_fmt_seconds(oldest), style="red bold" if oldest > 900 else "green" if oldest < 60 else "yellow")
    head.append("   webhooks/min: ", style="bold")
    head.append(_rate(v.webhooks_per_minute))
    if v.orders_by_state:
        head.append("   orders: ", style="bold")
        head.append("  ".join(f"{k} {n:,.0f}" for k, n in sorted(v.orders_by_state.items())))

    realms = Table(title="QuickBooks, per realm", expand=True)
    for col in ("realm", "booked/min", f"requests, last min (of {QUOTA_PER_MINUTE})", "pace/min", "429s/min", "state",
                "token expires"):
        realms.add_column(col)
    for r in v.realms:
        state = "[red]BLOCKED[/]" if r.blocked else "[yellow]circuit open[/]" if r.circuit_open else "[green]ok[/]"
        token = "?" if r.token_expires_in_days is None else f"{r.token_expires_in_days:.1f} days"
        if r.token_expires_in_days is not None and r.token_expires_in_days < 14:
            token = f"[red]{token}[/]"
        realms.add_row(r.realm, _rate(r.booked_per_minute), f"{r.requests_last_minute:,.0f}",
                       f"{r.pace_per_minute:,.0f}", _rate(r.throttled_per_minute), state, token)
    if not v.realms:
        realms.add_row("(no realm yet: nothing dispatched)", "", "", "", "", "", "")

    small = Table.grid(expand=True, padding=(0, 4))
    for _ in range(3):
        small.add_column()

    def listing(title: str, data: dict[str, float]) -> Table:
        t = Table(title=title, expand=True, show_header=False)
        t.add_column("")
        t.add_column("", justify="right")
        for k, n in sorted(data.items()):
            t.add_row(k, f"{n:,.0f}")
        if not data:
            t.add_row("none", "")
        return t

    small.add_row(listing("lag by topic", v.lag_by_topic), listing("retries waiting by rung", v.retries_by_rung),
                  listing("dead letters since start", v.dead_letters_by_reason))
    parts: list[RenderableType] = [head, realms, small]
    for r in v.realms:
        if r.numbers_kept is False:
            parts.append(Text(f"realm {r.realm}: custom transaction numbers are OFF in QuickBooks: it numbers documents "
                              "itself, so each document costs a lookup by its note first (Settings → Sales → Custom "
                              "transaction numbers: on)", style="yellow"))
    if v.unreachable:
        parts.append(Text("unreachable: " + "; ".join(v.unreachable), style="red"))
    parts.append(Text("q or Ctrl-C quits", style="dim"))
    return Panel(Group(*parts), title="magqb top")


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """cbreak mode on a terminal, so a single `q` is read without Enter; restored on the way out."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(timeout: float, keys: bool) -> bool:
    if not keys:
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and sys.stdin.read(1).lower() == "q"


@click.command()
@click.option("--ingress", "ingress_urls", multiple=True, metavar="URL",
              help="An ingress's /metrics [default: http://127.0.0.1:8080/metrics]. Repeatable.")
@click.option("--worker", "worker_urls", multiple=True, metavar="URL",
              help="A worker's /metrics [default: http://127.0.0.1:6066/metrics]. Repeatable: one per worker.")
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True, help="Seconds per refresh.")
@click.option("--once", is_flag=True, help="Print one view (rates need two: taken --interval apart) and exit.")
def top(ingress_urls: tuple[str, ...], worker_urls: tuple[str, ...], interval: float, once: bool) -> None:
    """A live view for an operator without Grafana: per realm, orders booked a minute against
    QuickBooks' 500 requests a minute, requests in the last minute, the pacer's pace, 429s, a
    blocked realm or open circuit, the refresh token's expiry; the oldest unbooked order, orders
    by state, consumer lag, retries waiting per rung and dead letters. Read from the same /metrics
    endpoints Prometheus scrapes; works over ssh. Refreshes every --interval seconds; q or Ctrl-C quits.
    """
    from rich.console import Console
    from rich.live import Live

    from app.tools.top_view import view

    urls = [*(ingress_urls or ("http://127.0.0.1:8080/metrics",)), *(worker_urls or ("http://127.0.0.1:6066/metrics",))]
    console = Console()
    from app.tools.top_view import fetch

    before = fetch(urls)
    if once:
        time.sleep(interval)
        console.print(render(view(fetch(urls), before)))
        return
    try:
        with _keys() as keys, Live(render(view(before, None)), console=console, screen=False,
                                   auto_refresh=False) as live:
            while not _quit_pressed(interval, keys):
                now = fetch(urls)
                live.update(render(view(now, before)), refresh=True)
                before = now
    except KeyboardInterrupt:
        pass
