"""CPython's cyclic garbage collector, set for services that churn through short-lived objects.

With the default thresholds (700, 10, 10) a collection of the youngest generation runs
every 700 net container allocations. A batch service holds thousands of rows, readings
and messages alive across awaits, so they survive young collections, are promoted, and
soon trigger full collections, each scanning every object in the process, on the critical
path of every batch in flight (figures: docs/decisions.md, "The services tune CPython's
garbage collector", and bench/RESULTS.md).

Memory is still freed by reference counting the moment it is unused; the collector only
finds reference cycles (exception tracebacks, some asyncio internals), which are few.
So: everything alive after startup (modules, classes, settings, pools) is moved out of
the collector's sight (`gc.freeze`), and the youngest generation is collected after
`gen0_threshold` net allocations instead of 700.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("procwatch.runtime.gc")

DEFAULT_GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Freeze what startup created and raise the young-generation threshold; returns the thresholds now
    in force. 0 leaves the collector at CPython's defaults (an escape hatch, not a tuning)."""
    if gen0_threshold <= 0:
        return gc.get_threshold()
    gc.collect()  # garbage of the startup itself is not frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    log.debug("garbage collector tuned", extra={"gen0_threshold": gen0_threshold, "frozen": gc.get_freeze_count()})
    return gc.get_threshold()
