"""Counters of a bus socket, and the one-log-line-per-reason rule for bad messages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from slam.bus.codec import BusMessageError


@dataclass
class BusStats:
    """What a socket has seen since it opened (counts of messages; ``bytes`` received or sent).

    rejected: malformed, oversized or unexpected messages thrown away (``reasons`` by key,
    ``last_reject`` the latest text). dropped: publisher, not sent because the queue was full;
    subscriber, superseded by a newer message (``conflate``). gaps: messages a subscriber
    never got, from holes in the per-topic sequence numbers (a slow subscriber's queue overflowed).
    """

    sent: int = 0
    received: int = 0
    rejected: int = 0
    dropped: int = 0
    gaps: int = 0
    bytes: int = 0
    last_reject: str = ""
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, err: BusMessageError, where: str, log: logging.Logger) -> None:
        """Count a rejected message; log the first one of each reason (a flood must not flood the log)."""
        self.rejected += 1
        self.last_reject = str(err)
        n = self.reasons.get(err.reason, 0)
        self.reasons[err.reason] = n + 1
        if n == 0:
            log.warning("rejected a bus message on %s: %s (further %r rejections are only counted)", where, err, err.reason)
