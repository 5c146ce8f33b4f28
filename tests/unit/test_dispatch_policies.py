import pytest

from app.domain.circuit import CircuitBreaker, CircuitState
from app.domain.pacing import Pacer
from app.domain.retry_ladder import LadderError, next_rung, parse_ladder


def test_ladder_parses_and_names_topics() -> None:
    ladder = parse_ladder("30s,5m,30m,2h")
    assert [(r.topic, r.seconds) for r in ladder] == [
        ("qbo.retry.30s", 30), ("qbo.retry.5m", 300), ("qbo.retry.30m", 1800), ("qbo.retry.2h", 7200)]
    assert next_rung(ladder, 1) == ladder[0]
    assert next_rung(ladder, 4) == ladder[3]
    assert next_rung(ladder, 5) is None  # dead letter


@pytest.mark.parametrize("bad", ["", "30x", "5m,30s", "1s,1s", "ten"])
def test_bad_ladders_are_refused(bad: str) -> None:
    with pytest.raises(LadderError):
        parse_ladder(bad)


def simulate(pacer: Pacer, seconds: float) -> list[float]:
    """Send as fast as the pacer allows for `seconds`; return the send times."""
    now, sent = 0.0, []
    while now < seconds:
        wait = pacer.delay(now)
        if wait > 0:
            now += wait
            continue
        pacer.record(now)
        sent.append(now)
    return [t for t in sent if t < seconds]


def max_in_window(times: list[float], span: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - span:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_pacer_never_exceeds_qbo_quota_and_uses_at_least_95_percent() -> None:
    times = simulate(Pacer(per_minute=500, per_second=10), 300)
    assert max_in_window(times, 60.0) <= 500
    assert max_in_window(times, 1.0) <= 10
    assert len(times) >= 0.95 * 500 * 5


def test_a_429_pauses_then_slows_and_recovers() -> None:
    pacer = Pacer(per_minute=500, per_second=10)
    assert pacer.throttled(now=10.0, retry_after=None, backoff=60.0) == 60.0
    assert pacer.delay(10.0) == pytest.approx(60.0)
    assert pacer.delay(70.0) == 0.0
    assert pacer.scale == pytest.approx(0.8)
    assert pacer.throttled(now=70.0, retry_after=5.0, backoff=60.0) == 5.0  # Retry-After wins
    for _ in range(100):
        pacer.succeeded()
    assert pacer.scale == 1.0


def test_circuit_opens_on_persistent_failure_and_probes() -> None:
    breaker = CircuitBreaker(window=10, threshold=0.8, min_calls=10, cooldown=30)
    for i in range(10):
        breaker.record(failed=i != 0, now=float(i))
    assert breaker.state is CircuitState.OPEN
    assert breaker.allow(now=20.0) == pytest.approx(19.0)
    assert breaker.allow(now=40.0) == 0.0 and breaker.state is CircuitState.HALF_OPEN
    breaker.record(failed=True, now=40.0)
    assert breaker.state is CircuitState.OPEN
    assert breaker.allow(now=71.0) == 0.0
    breaker.record(failed=False, now=71.0)
    assert breaker.state is CircuitState.CLOSED


def test_circuit_ignores_occasional_failures() -> None:
    breaker = CircuitBreaker()
    for i in range(100):
        breaker.record(failed=i % 3 == 0, now=float(i))
    assert breaker.state is CircuitState.CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = CircuitBreaker(window=10, threshold=0.8, min_calls=10, cooldown=30, probe_timeout=60)
    for i in range(10):
        breaker.record(failed=True, now=float(i))
    assert breaker.state is CircuitState.OPEN
    assert breaker.allow(now=40.0) == 0.0  # the probe
    waits = [breaker.allow(now=40.0 + k * 0.1) for k in range(1, 50)]
    assert all(w > 0 for w in waits)  # everyone else waits for the probe's answer
    breaker.record(failed=False, now=45.0)
    assert breaker.state is CircuitState.CLOSED
    assert [breaker.allow(now=45.0) for _ in range(5)] == [0.0] * 5


def test_a_probe_that_never_answers_is_replaced_after_the_probe_timeout() -> None:
    breaker = CircuitBreaker(window=10, threshold=0.8, min_calls=10, cooldown=30, probe_timeout=60)
    for i in range(10):
        breaker.record(failed=True, now=float(i))
    assert breaker.allow(now=40.0) == 0.0
    assert breaker.allow(now=99.0) > 0
    assert breaker.allow(now=100.5) == 0.0  # the first probe's caller was cancelled: a second one goes
    assert breaker.allow(now=101.0) > 0


@pytest.mark.parametrize(("header", "seconds"), [
    ("60", 60.0), (" 7 ", 7.0), ("0", 0.0),
    ("86400", 900.0), ("99999999999999", 900.0),  # capped at 15 minutes
    ("Mon, 30 Nov 2026 00:00:30 GMT", 30.0),  # an HTTP-date, 30 s after "now"
    ("Mon, 30 Nov 2026 00:00:00 GMT", 0.0), ("Sun, 29 Nov 2026 00:00:00 GMT", 0.0),  # in the past: now
    ("Tue, 01 Dec 2026 00:00:00 GMT", 900.0),
])
def test_retry_after_is_parsed_strictly_and_capped(header: str, seconds: float) -> None:
    from datetime import UTC, datetime

    from app.domain.pacing import parse_retry_after

    now = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert parse_retry_after(header, now) == seconds


@pytest.mark.parametrize("nonsense", [None, "", "-5", "1.5", "1e9", "nan", "inf", "soon", "60s", "0x10",
                                      "Mon, 30 Nov 2026 00:00:30", "Mon, 99 Nov 2026 00:00:30 GMT", "٣"])
def test_nonsense_retry_after_is_treated_as_absent(nonsense: str | None) -> None:
    from app.domain.pacing import parse_retry_after

    assert parse_retry_after(nonsense, 1_796_000_000.0) is None


def test_a_429_with_nonsense_retry_after_pauses_for_the_configured_backoff() -> None:
    import asyncio

    from app.adapters.realm_gate import RealmGate

    pacer = Pacer(per_minute=500, per_second=10)
    gate = RealmGate("1", pacer, CircuitBreaker(), throttle_backoff=60.0, clock=lambda: 100.0, wall=lambda: 0.0)
    gate.after_call(429, "nan")
    assert pacer.paused_until == 160.0
    gate.after_call(429, "86400")
    assert pacer.paused_until == 1000.0  # 15 minutes, not a day
    asyncio.run(asyncio.sleep(0))
