"""The REST follower in the worker: one pass every MAGQB_FOLLOW_INTERVAL, on the group's leader only.

faust elects one leader per worker group (the owner of its assignor topic); when that worker dies
or leaves, another becomes leader at the rebalance and continues from the cursor on Kafka. The timer
runs on every worker so that one that stops leading also stops reporting follower figures.
"""

from __future__ import annotations

import logging

from agents.context import WorkerContext
from app.adapters import kafka_io
from app.adapters.magento_api import MagentoApiError, MagentoConnection
from app.adapters.magento_auth import MagentoAuthError
from app.sources.rest_follow import CursorStore, Follower

log = logging.getLogger("magqb.follow")


def register_follower(ctx: WorkerContext) -> None:
    settings = ctx.settings
    if not settings.magento_rest_configured:
        log.info("REST follower off: MAGENTO_BASE_URL and credentials are not set")
        return
    connection = MagentoConnection(settings.magento_base_url, settings.magento_auth, True, total_timeout=60.0,
                                   max_attempts=4)
    state: dict[str, Follower] = {}

    async def follower() -> Follower | None:
        if "follower" not in state:
            client = connection()
            if client is None:
                return None
            # Made here, in the worker's loop (aiokafka binds a client to the loop it is made in).
            producer = kafka_io.producer(settings.kafka_bootstrap_servers, f"{settings.app_id}-follow",
                                         settings.max_event_bytes)
            await producer.start()
            state["follower"] = Follower(client, producer, CursorStore(producer, settings.kafka_bootstrap_servers,
                                                                       client.base_url), settings.max_event_bytes)
        return state["follower"]

    @ctx.app.timer(settings.follow_interval_seconds, name="magqb-follow")
    async def follow() -> None:
        if not ctx.app.is_leader():
            if "follower" in state:
                state["follower"].stop_reporting()
            return
        try:
            f = await follower()
            if f is not None:
                await f.run_pass()
        except (MagentoApiError, MagentoAuthError) as exc:
            log.error("follower pass failed: %s; next pass in %.0fs", exc, settings.follow_interval_seconds)
        except Exception as exc:  # noqa: BLE001 - one bad pass must not end the timer: the next one retries
            log.error("follower pass failed: %s: %s; next pass in %.0fs", exc.__class__.__name__, exc,
                      settings.follow_interval_seconds)
