"""The REST follower's cursor, kept on the compacted topic `magqb.follow-cursor` (key: the store's
REST base URL), so whichever worker leads next continues where the last one stopped."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

MAGENTO_TIME = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"


class StreamCursor(BaseModel):
    """How far one search (orders by updated_at, credit memos by created_at, paid invoices by
    updated_at) has been read: the newest time taken, and the rows taken at or after `at` minus the
    overlap (`entity_id@time`), which the next pass reads again and must not publish twice."""

    at: str = Field(pattern=MAGENTO_TIME)
    seen: list[str] = Field(default_factory=list)


class FollowCursor(BaseModel):
    schema_version: Literal[1] = 1
    base_url: str
    orders: StreamCursor
    creditmemos: StreamCursor
    invoices: StreamCursor
    # When the last complete pass began (this host's clock): everything Magento had changed by then,
    # less the overlap, has been published.
    caught_up_at: datetime | None = None
    passes: int = 0
    published: int = 0
