"""Bursts stay readable: how a chat channel (Slack, Discord) turns many events into few
messages, inside the services' rate limits (pure; the clock is passed in).

The rule, per channel:
- Messages are paced: at least `min_interval_s` apart (Slack: 1 s, its limit of about one
  message per second per webhook; Discord: 2 s, its 30 per minute per webhook).
- In any `window_s` (10 s), the first `burst` (5) events go out one message each.
- Past that, everything waiting in the channel's queue goes out as ONE digest message
  (the first 40 events listed, the rest counted), and again at the next paced turn.
So 200 processes going down at once give 5 messages and one digest, not 200; a steady
trickle of one event every few seconds still gets one message per event.
Email and webhooks are not digested (machines and mail clients handle volume).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_INTERVAL_S = {"slack": 1.0, "discord": 2.0}
BURST = 5
WINDOW_S = 10.0


@dataclass(frozen=True)
class Turn:
    wait_s: float  # wait this long before sending (pacing)
    take: int  # how many queued events the next message stands for (1 = one message each)

    @property
    def digest(self) -> bool:
        return self.take > 1


class Pacer:
    """One chat channel's recent messages, and what the next turn sends."""

    def __init__(self, min_interval_s: float, *, burst: int = BURST, window_s: float = WINDOW_S) -> None:
        self.min_interval_s = min_interval_s
        self.burst = burst
        self.window_s = window_s
        self.sent: deque[float] = deque()

    def plan(self, now: float, queued: int) -> Turn:
        """The next turn for `queued` (>= 1) waiting events, at monotonic time `now`."""
        wait = max(0.0, self.sent[-1] + self.min_interval_s - now) if self.sent else 0.0
        at = now + wait
        while self.sent and self.sent[0] <= at - self.window_s:
            self.sent.popleft()
        take = 1 if len(self.sent) < self.burst else queued
        return Turn(wait_s=wait, take=max(1, take))

    def record(self, at: float) -> None:
        """A message went out (or was attempted) at `at`."""
        self.sent.append(at)
