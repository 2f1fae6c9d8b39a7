import random

import pytest

from prismq_queue import InvalidArgument, RetryPolicy


def test_defaults_match_the_documented_policy():
    p = RetryPolicy()
    assert (p.max_attempts, p.base_delay, p.factor, p.max_delay, p.jitter) == (5, 1.0, 2.0, 300.0, 0.1)


def test_delay_doubles_and_is_capped():
    p = RetryPolicy(jitter=0)
    assert [p.delay(a) for a in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert p.delay(20) == 300.0
    assert p.delay(10_000) == 300.0  # no overflow


def test_jitter_stays_within_its_band():
    p = RetryPolicy(base_delay=10, jitter=0.1)
    rng = random.Random(1)
    delays = [p.delay(1, rng) for _ in range(500)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # it really varies


def test_should_retry_counts_attempts():
    p = RetryPolicy(max_attempts=3)
    assert p.should_retry(2) and not p.should_retry(3)
    assert p.should_retry(3, max_attempts=4)


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"max_attempts": -1}, {"base_delay": -1},
                                    {"factor": 0.5}, {"jitter": 2}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        RetryPolicy(**kwargs)
