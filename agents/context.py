"""What the worker's wiring (app/worker_app.py) hands every agent: its topics, tables, settings and
ownership. The agents import this, never the wiring, which imports them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT
from faust.types.tables import GlobalTableT

from app.adapters.ownership import Ownership
from app.domain.mapping import MappingConfig
from app.domain.state_tally import StateTally
from app.settings import Settings

# Every command and result a worker writes names it in this header (host:pid): which worker booked what, for an
# operator tracing an order and for the test that proves a worker fenced while frozen wrote nothing after.
H_WRITER = "magqb-writer"
WRITER = f"{socket.gethostname()}:{os.getpid()}".encode()


def written_by_me(headers: dict[str, bytes] | None = None) -> dict[str, bytes]:
    return {**(headers or {}), H_WRITER: WRITER}


@dataclass
class WorkerContext:
    settings: Settings
    app: faust.App
    orders_and_results: faust.TopicT
    commands: faust.TopicT
    results: faust.TopicT
    dead_letter: faust.TopicT
    order_state: TableT[Any, Any]
    customers: GlobalTableT
    items: GlobalTableT
    mapping: MappingConfig
    ownership: Ownership
    tally: StateTally


def raw_topic(app: faust.App, *names: str, partitions: int) -> faust.TopicT:
    """Bytes in, bytes out: every payload is decoded by its pydantic model in the agent."""
    return app.topic(*names, partitions=partitions, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw")
