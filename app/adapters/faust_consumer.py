"""faust-streaming 0.15.3's Kafka consumer, minus the ways it loses records around a rebalance.

Faust reads through aiokafka, whose position moves past a batch as soon as the batch
is handed over, and relies on one seek to the committed offsets at the end of each
recovery (`perform_seek`) to re-read whatever it fetched but did not deliver. After a
worker was SIGKILLed, its successor (or its own restart) sometimes never saw some
records and idled on orders it had accepted (issue #4, chaos scenarios 2 and 3):

1. Records of a partition paused for recovery, of a stopped flow or of an old
   generation are dropped from the batch, but aiokafka's position has moved on; and
   aiokafka's `seek_to_committed` leaves a partition alone when its committed offset
   is missing or 0 — exactly the partitions a killed worker never got to commit. Here
   every record fetched but not handed out rewinds its partition to that record, and
   a never-committed partition is rewound to its beginning (the app reads from
   `earliest`; what was already handled is deduplicated by the order-state table and
   the requestids).
2. `perform_seek` runs while the fetcher may still hand out a batch fetched before
   the seek; those stale records move faust's read offset past the rewound position,
   so the re-read records are then dropped as duplicates or counted as an offset gap
   and committed without reaching an agent. Here a seek bumps an epoch, and the rest
   of a batch fetched under an older epoch is not handed out but rewound (rule 1).
3. At the end of a recovery faust resumes "flow control" a second time — after the
   fetcher has been delivering again for a while — and a resume empties every stream
   queue: records fetched after the seek vanish from memory with the position past
   them. Here a resume empties the queues only when flow was actually suspended (at a
   rebalance, where faust empties them anyway); a record delivered twice is handled
   twice, idempotently.
4. faust acknowledges on its own: a record it skips (fetched under an old generation,
   or while flow was suspended) is acked even on a `noack()` stream, and a closed
   iterator acks the event it was on. Here only what an agent declared finished
   (`finished()`, through app.adapters.acks.acknowledge) is acknowledged.
5. faust commits past a hole: `_new_offset` accepts a one-offset hole after the
   committed offset, and any hole in a never-committed partition. Here the acked
   offsets must start exactly at the committed offset (or at the first record
   delivered, for a partition never committed), or nothing is committed yet.
6. Records deleted before they were handled (retention; `kafka-delete-records`): the
   committed offset is below the partition's log start and the consumer resets to the
   log start. faust records the jump as a gap and commits past it — silently: orders
   whose commands were deleted then wait forever and nobody knows. Here the first
   record delivered after a seek above the committed offset is checked against the
   log start; records that were deleted are logged and counted
   (`magqb_records_expired_unhandled_total`), and the log start becomes the committed
   offset the commits go on from (a rewind clears faust's read offset, and with it
   faust's gap: rule 5 alone would then wait for the deleted record for ever).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from app import metrics

log = logging.getLogger("magqb.consumer")


class RewindingConsumer(faust_aiokafka.Consumer):
    _seek_epoch: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._finished: set[tuple[TP, int]] = set()
        self._first_delivered: dict[TP, int] = {}
        self._start_checked: set[TP] = set()  # rule 6: partitions whose first record since the seek was seen

    def finished(self, message: Any) -> None:
        """An agent is done with this record: its ack may count."""
        self._finished.add((message.tp, message.offset))

    def ack(self, message: Any) -> bool:
        key = (message.tp, message.offset)
        if key not in self._finished:
            return False  # faust acking on its own (a skipped record, a closed iterator): not finished work
        self._finished.discard(key)
        return bool(super().ack(message))

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked.get(tp)
        if acked and not self._gap.get(tp):
            base = self._committed_offset.get(tp)
            if base is None:
                base = self._first_delivered.get(tp)
            if base is None or min(acked) > base:
                return None  # the record at `base` is not finished: nothing past it may be committed
        result: int | None = super()._new_offset(tp)
        return result

    async def perform_seek(self) -> None:
        self._seek_epoch += 1
        self._first_delivered.clear()
        self._start_checked.clear()
        try:
            await super().perform_seek()
        finally:
            self._seek_epoch += 1

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            never_committed = [tp for tp, offset in committed.items()
                               if not offset and not self._is_changelog_tp(tp)]
            if never_committed:
                await self._thread.seek_to_beginning(*never_committed)
        return committed

    async def _check_log_start(self, tp: TP, committed: int) -> None:
        """Rule 6: were the records from the committed offset on deleted before they were handled?"""
        try:
            start = (await self.earliest_offsets(tp)).get(tp)
        except Exception as exc:  # noqa: BLE001 - asked again after the next seek; nothing is committed meanwhile
            self._start_checked.discard(tp)
            log.warning("%s: could not read the log start (%s); asking again later", tp, exc)
            return
        if start is None or start <= committed:
            return
        # What is below the log start can never be handled: faust's committed offset moves up to it, so
        # neither rule 5 nor faust's own hole check waits for it (and no gap is recorded below it).
        self._committed_offset[tp] = start
        lost = start - committed
        metrics.RECORDS_EXPIRED_UNHANDLED.labels(topic=tp.topic).inc(lost)
        log.critical("%s[%d]: %d record(s) at offsets %d..%d were deleted (retention or delete-records) before they "
                     "were handled; committing on from %d. Orders they carried may be stuck or missing: "
                     "`magqb replay --stuck` and `magqb reconcile` find them", tp.topic, tp.partition, lost, committed,
                     start - 1, start)

    def _rewind(self, first_undelivered: dict[TP, int]) -> None:
        assigned = self.assignment()
        for tp, offset in first_undelivered.items():
            if tp in assigned:
                self._thread.seek(tp, offset)
                self._read_offset[tp] = None
                metrics.CONSUMER_REWINDS.labels(topic=tp.topic).inc()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # faust's Consumer.getmany, except that nothing fetched is silently left behind.
        epoch = self._seek_epoch
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        undelivered: dict[TP, int] = {}
        to_message = self._to_message
        try:
            for tp, record in self.scheduler.iterate(records):
                if tp in undelivered:
                    continue  # a partition's records go out in order or not at all
                if (not self.flow_active or self._seek_epoch != epoch
                        or self.app.consumer_generation_id != generation_id
                        or (active_partitions is not None and tp not in active_partitions
                            and tp not in self._buffered_partitions)):
                    undelivered[tp] = record.offset
                    continue
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                committed = self._committed_offset.get(tp)
                if committed is None:
                    self._first_delivered.setdefault(tp, record.offset)
                if tp not in self._start_checked:  # the first record since the seek: where the consumer starts
                    self._start_checked.add(tp)
                    if committed is not None and record.offset > committed:
                        await self._check_log_start(tp, committed)
                yield tp, to_message(tp, record)
        finally:
            if undelivered:
                self._rewind(undelivered)


class RewindingTransport(faust_aiokafka.Transport):
    Consumer = RewindingConsumer


class KeepingFlowControl(FlowControlEvent):
    def resume(self) -> None:
        if self.is_active():
            return  # already flowing: what the queues hold was delivered after the last seek
        super().resume()
