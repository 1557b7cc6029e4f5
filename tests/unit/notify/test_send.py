from __future__ import annotations

import pytest

from procwatch_notify.send import outcome_of, parse_smtp_url

pytestmark = pytest.mark.unit


def test_outcomes_of_statuses():
    assert outcome_of(204, None, 0).ok
    gone = outcome_of(410, None, 0)
    assert gone.gone and not gone.retryable
    limited = outcome_of(429, "12", 0)
    assert limited.retry_after_s == 12 and limited.retryable
    assert outcome_of(500, "12", 0).retry_after_s is None and outcome_of(500, None, 0).retryable
    assert not outcome_of(400, None, 0).retryable and outcome_of(404, None, 0).retryable


def test_smtp_urls():
    plain = parse_smtp_url("smtp://u%40x:p%3Aw@mail.example:2525")
    assert (plain.hostname, plain.port, plain.username, plain.password, plain.use_tls) == \
        ("mail.example", 2525, "u@x", "p:w", False)
    assert parse_smtp_url("smtps://mail.example").port == 465 and parse_smtp_url("smtps://m").use_tls
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example")
