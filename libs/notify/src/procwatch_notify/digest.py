"""Bursts stay readable: how a chat channel (Slack, Discord) turns many events into few
messages, inside the services' rate limits (pure; the clock is passed in).

The rule, per channel:
- Messages are paced: at least `min_interval_s` apart (Slack: 1 s, its limit of about one
  message per second per webhook; Discord: 2 s, its 30 per minute per webhook).
- A burst is a run of messages each less than `window_s` (10 s) after the previous one. Its
  first `burst` (5) messages carry one event each; after that, each message carries
  everything waiting in the channel's queue as ONE digest (the first 40 events listed, the
  rest counted). 10 s without a message ends the burst.
So 200 processes going down at once give 5 messages and one digest, not 200; a steady
trickle of single events still gets one message per event (a digest of one is the event's
own message). The state (last message, streak) lives on the channel row, so every notifier
replica paces a channel from where the last one left it (`Pacer.resume`).
Email and webhooks are not digested (machines and mail clients handle volume).
"""

from __future__ import annotations

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
    """One chat channel's current burst, and what its next turn sends."""

    def __init__(self, min_interval_s: float, *, burst: int = BURST, window_s: float = WINDOW_S) -> None:
        self.min_interval_s = min_interval_s
        self.burst = burst
        self.window_s = window_s
        self.last: float | None = None
        self.streak = 0  # messages of the current burst

    @classmethod
    def resume(cls, min_interval_s: float, *, now: float, since_last_s: float | None, streak: int) -> Pacer:
        """A pacer picking up a channel's burst where another sender (replica) left it: its last
        message went out `since_last_s` seconds before `now` (None: never), `streak` messages into
        the burst."""
        pacer = cls(min_interval_s)
        if since_last_s is not None:
            pacer.last = now - max(0.0, since_last_s)
            pacer.streak = streak
        return pacer

    def _continues(self, at: float) -> bool:
        return self.last is not None and at - self.last < self.window_s

    def plan(self, now: float, queued: int) -> Turn:
        """The next turn for `queued` (>= 1) waiting events, at monotonic time `now`."""
        wait = max(0.0, self.last + self.min_interval_s - now) if self.last is not None else 0.0
        streak = self.streak if self._continues(now + wait) else 0
        return Turn(wait_s=wait, take=1 if streak < self.burst else max(1, queued))

    def record(self, at: float) -> None:
        """A message went out (or was attempted) at `at`."""
        self.streak = self.streak + 1 if self._continues(at) else 1
        self.last = at
