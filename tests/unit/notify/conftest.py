from __future__ import annotations

from datetime import UTC, datetime

import pytest

from procwatch_contracts.messages import AlertEvent, AlertProcess, AlertServer

T0 = datetime(2026, 12, 1, 11, 57, 8, tzinfo=UTC)


def alert(type_: str = "process_down", state: str = "firing", *, process: str = "nginx", host: str = "web-1",
          value: float | None = 0.0, threshold: float | None = None, n: int = 1, at: datetime = T0,
          reason: str | None = None) -> AlertEvent:
    return AlertEvent(id=f"alert-{n}-{type_}-{state}-x", type=type_, state=state, occurred_at=at, user_id=7,
                      server=AlertServer(id=3, hostname=host), process=AlertProcess(id=n, process_name=process),
                      value=value, threshold=threshold, reason=reason)


@pytest.fixture
def make_alert():
    return alert
