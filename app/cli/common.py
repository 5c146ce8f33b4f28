"""What every `magqb` command shares: settings, the mapping, topics, ports, output and progress."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import click


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"magqb: {message}", err=True)
    sys.exit(code)


def get_settings() -> Any:
    from app.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def check_magento_rest(settings: Any, what: str) -> None:
    """Incomplete Magento credentials stop start-up with one line, not a 500 at the first notification."""
    if settings.magento_rest_configured:
        from app.adapters.magento_auth import MagentoAuthError

        try:
            settings.magento_auth()
        except MagentoAuthError as exc:
            fail(f"cannot start {what}: {exc}")


def magento_client(settings: Any, session: Any) -> Any:
    """The REST client of the operator's tools; a missing base URL or credential is one line, exit 2."""
    from app.adapters.magento_api import MagentoApiError, MagentoClient
    from app.adapters.magento_auth import MagentoAuthError

    try:
        return MagentoClient(session, settings.magento_base_url, settings.magento_auth())
    except (MagentoApiError, MagentoAuthError) as exc:
        fail(str(exc))


def mapping(path: Any) -> Any:
    from app.mapping_file import MappingFileError, load_mapping

    try:
        return load_mapping(path)
    except MappingFileError as exc:
        fail(str(exc))


def retry_topics(s: Any) -> tuple[str, ...]:
    return tuple(r.topic for r in s.retry_ladder)


def app_topics(s: Any) -> Any:
    """The application's topics as the settings size them, retry rungs included."""
    from app import topics

    return topics.app_topics(s.kafka_partitions, s.kafka_replication_factor or topics.CLUSTER_DEFAULT,
                             retry_topics(s))


def ensure_app_topics(s: Any, names: Iterable[str] | None = None) -> None:
    """Create (or check) the topics a tool reads or writes; a clear line when Kafka is not there."""
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics

    wanted = set(names) if names is not None else None
    specs = [t for t in app_topics(s) if wanted is None or t.name in wanted]
    try:
        asyncio.run(ensure_topics(s.kafka_bootstrap_servers, specs, timeout=s.kafka_connect_timeout_seconds))
    except (BrokerUnavailable, TopicLayoutError) as exc:
        fail(str(exc))


def check_port(host: str, port: int, what: str) -> None:
    """Fail fast with a clear line rather than a traceback from deep inside a server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            fail(f"cannot start {what}: {host}:{port} is not available ({exc.strerror})")


async def serve_until_signal(runner: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- output


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned table, CSV or JSON (one document): what `--format` offers."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class Progress:
    """done/total, rate and ETA: a bar redrawn in place on a terminal, a plain line every few seconds
    otherwise (logs, CI, `| tee`). Written to stderr, so stdout stays the command's answer."""

    def __init__(self, what: str, total: int | None = None, unit: str = "orders", every: float = 5.0) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.started = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._every = 0.2 if self._tty else every
        self._last = 0.0

    def update(self, done: int, total: int | None = None, force: bool = False) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        line = self.line(now)
        if self._tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            bar = "#" * int(frac * 24)
            eta_s = f"{eta:,.0f}s" if eta != float("inf") else "?"
            return (f"{self.what} [{bar:<24}] {self.done:,}/{self.total:,} {self.unit} ({frac:.0%}) "
                    f"{rate:,.0f}/s ETA {eta_s}")
        return f"{self.what} {self.done:,} {self.unit} {rate:,.0f}/s"

    def close(self) -> None:
        self.update(self.done, force=True)
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
