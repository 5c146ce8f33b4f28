"""`magqb top`'s arithmetic: sums over workers, per-minute rates from two snapshots, flags per realm."""

from __future__ import annotations

from app.tools.top_view import Snapshot, view

WORKER_A = """
magqb_documents_created_total{doc_type="SalesReceipt",how="created"} 100
magqb_qbo_requests_total{realm="123",entity="salesreceipt",method="POST",status="200",kind="write"} 100
magqb_qbo_requests_total{realm="123",entity="salesreceipt",method="POST",status="429",kind="write"} 2
magqb_qbo_requests_last_minute{realm="123"} 240
magqb_qbo_pace_per_minute{realm="123"} 495
magqb_qbo_realm_blocked{realm="123"} 0
magqb_qbo_circuit_open{realm="123"} 0
magqb_qbo_refresh_token_expiry_seconds{realm="123"} 864000
magqb_oldest_unbooked_order_seconds 12
magqb_orders{state="booked"} 90
magqb_orders{state="waiting"} 3
magqb_consumer_lag{group="g",topic="magento.orders",partition="0"} 4
magqb_retries_waiting{rung="30s"} 1
magqb_dead_letters_total{reason="mapping"} 1
magqb_dead_letters_total{reason="permanent"} 0
"""
WORKER_B = """
magqb_oldest_unbooked_order_seconds 30
magqb_orders{state="booked"} 10
magqb_consumer_lag{group="g",topic="magento.orders",partition="1"} 6
"""


def snap(at: float, *pages: str) -> Snapshot:
    s = Snapshot(at=at)
    for n, page in enumerate(pages):
        s.add(page, f"worker{n}")
    return s


def test_figures_are_summed_over_workers_and_rates_need_two_snapshots() -> None:
    first = view(snap(0.0, WORKER_A, WORKER_B), None)
    assert first.oldest_unbooked_seconds == 30  # the oldest of all workers
    assert first.orders_by_state == {"booked": 100, "waiting": 3}
    assert first.lag_by_topic == {"magento.orders": 10}
    assert first.dead_letters_by_reason == {"mapping": 1}
    [realm] = first.realms
    assert (realm.realm, realm.requests_last_minute, realm.pace_per_minute, realm.blocked) == ("123", 240, 495, False)
    assert realm.booked_per_minute is None and realm.token_expires_in_days == 10

    later = WORKER_A.replace("created\"} 100", "created\"} 130").replace('status="429",kind="write"} 2',
                                                                         'status="429",kind="write"} 3')
    second = view(snap(30.0, later, WORKER_B), snap(0.0, WORKER_A, WORKER_B))
    assert second.realms[0].booked_per_minute == 60  # 30 in 30 s
    assert second.realms[0].throttled_per_minute == 2


def test_a_counter_reset_is_not_a_negative_rate() -> None:
    restarted = WORKER_A.replace("created\"} 100", "created\"} 5")
    v = view(snap(60.0, restarted), snap(0.0, WORKER_A))
    assert v.realms[0].booked_per_minute == 0


def test_a_process_unreachable_once_is_not_a_jump() -> None:
    later = WORKER_A.replace("created\"} 100", "created\"} 106")
    without_a = Snapshot(at=0.0)
    without_a.add(WORKER_B, "worker1")
    v = view(snap(60.0, later, WORKER_B), without_a)  # worker0 was unreachable the time before
    assert v.realms[0].booked_per_minute == 0


def test_a_company_that_numbers_its_documents_itself_is_flagged_per_realm() -> None:
    off = WORKER_A + 'magqb_qbo_custom_txn_numbers{realm="123"} 0\n'
    [realm] = view(snap(0.0, off, WORKER_B), None).realms
    assert realm.numbers_kept is False
    [realm] = view(snap(0.0, WORKER_A.replace("} 240", "} 240\nmagqb_qbo_custom_txn_numbers{realm=\"123\"} 1"),
                        WORKER_B), None).realms
    assert realm.numbers_kept is True
    [realm] = view(snap(0.0, WORKER_A, WORKER_B), None).realms
    assert realm.numbers_kept is None  # not read yet (no document since the worker started)
    from rich.console import Console

    from app.cli.top import render

    console = Console(width=160, record=True)
    console.print(render(view(snap(0.0, off, WORKER_B), None)))
    assert "custom transaction numbers are OFF" in console.export_text()
