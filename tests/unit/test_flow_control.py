"""The worker's flow control keeps what a stream queue holds unless flow was really suspended."""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlQueue

from app.adapters.faust_consumer import KeepingFlowControl


def _queue(flow: KeepingFlowControl) -> FlowControlQueue[int]:
    return FlowControlQueue(flow_control=flow, clear_on_resume=True)


def test_resuming_a_flowing_queue_keeps_its_records() -> None:
    async def run() -> int:
        flow = KeepingFlowControl()
        flow.resume()
        queue = _queue(flow)
        queue.put_nowait(41)  # delivered after the last seek: nothing else will deliver it again
        flow.resume()  # faust's second resume at the end of a recovery
        return queue.qsize()

    assert asyncio.run(run()) == 1


def test_resuming_after_a_suspension_still_clears() -> None:
    async def run() -> int:
        flow = KeepingFlowControl()
        flow.resume()
        queue = _queue(flow)
        queue.put_nowait(7)
        flow.suspend()  # a rebalance: the partitions are read again from their committed offsets
        flow.resume()
        return queue.qsize()

    assert asyncio.run(run()) == 0
