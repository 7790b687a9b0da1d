from gateway.rate_limit import RateLimiter


def test_a_window_admits_its_limit_then_refuses_until_the_next_minute():
    now = [120.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.allow("k", 3)[0] for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other", 3)[0]
    assert limiter.allow("k", 3)[1] == 60
    now[0] = 180.0
    assert limiter.allow("k", 3)[0]
    assert limiter.allow("k", None) == (True, 0)
