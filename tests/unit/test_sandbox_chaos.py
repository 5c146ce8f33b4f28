from app.sandbox.chaos import Dice, FaultSettings, RealmQuota


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_second_and_per_minute_windows_roll() -> None:
    clock = Clock()
    quota = RealmQuota(clock)
    s = FaultSettings(quota_per_minute=25, quota_per_second=10)
    assert [quota.admit(s) for _ in range(11)] == [True] * 10 + [False]
    clock.now += 1.001  # the second rolls over
    assert [quota.admit(s) for _ in range(11)] == [True] * 10 + [False]
    clock.now += 1.001
    assert [quota.admit(s) for _ in range(6)] == [True] * 5 + [False]  # 25 per minute spent
    clock.now += 58.0  # the first calls leave the minute window
    assert quota.admit(s) is True


def test_batch_items_count_like_calls_and_batches_have_their_own_limit() -> None:
    clock = Clock()
    quota = RealmQuota(clock)
    s = FaultSettings(quota_per_minute=500, quota_per_second=0, batch_per_minute=2)
    assert quota.admit(s, calls=30, batch=True) is True
    assert quota.admit(s, calls=30, batch=True) is True
    assert quota.admit(s, calls=1, batch=True) is False  # the 3rd batch call this minute
    assert quota.minute.room(500) == 440
    assert quota.admit(s, calls=441) is False  # a throttled request spends nothing
    assert quota.minute.room(500) == 440


def test_zero_turns_a_quota_off() -> None:
    quota = RealmQuota(Clock())
    s = FaultSettings(quota_per_minute=0, quota_per_second=0)
    assert all(quota.admit(s) for _ in range(5000))


def test_seeded_dice_repeat() -> None:
    a, b = Dice(7), Dice(7)
    assert [a.hit(0.3) for _ in range(50)] == [b.hit(0.3) for _ in range(50)]
    assert Dice(None).hit(0.0) is False
