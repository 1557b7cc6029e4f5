"""In-process counters: what this replica did since it started (logged periodically)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class IngestStats:
    batches: int = 0
    messages: int = 0
    messages_stored: int = 0
    samples_inserted: int = 0
    samples_duplicate: int = 0
    samples_dropped: int = 0  # unknown or paused process names
    events_published: int = 0
    batches_retried: int = 0
    deadlettered: Counter = field(default_factory=Counter)
    # Wall seconds spent per phase (screen, database, publish, ack): where a batch's time goes.
    phase_s: Counter = field(default_factory=Counter)

    def snapshot(self) -> dict[str, int]:
        out = {
            "batches": self.batches,
            "messages": self.messages,
            "messages_stored": self.messages_stored,
            "samples_inserted": self.samples_inserted,
            "samples_duplicate": self.samples_duplicate,
            "samples_dropped": self.samples_dropped,
            "events_published": self.events_published,
            "batches_retried": self.batches_retried,
            "deadlettered": sum(self.deadlettered.values()),
        }
        out.update({f"deadlettered_{code}": n for code, n in sorted(self.deadlettered.items())})
        out.update({f"{phase}_s": round(sec, 3) for phase, sec in sorted(self.phase_s.items())})
        return out
