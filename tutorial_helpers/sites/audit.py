"""`ChannelAudit`: what the controller's side of a channel to a site saw, searched for the site's data.

It records every gRPC message between the controller and one worker: the
bytes each way, and whether a message carries one of the site's canaries
(byte strings that mark its records, `data.write_site`) or one of its
probes (short runs of raw example bytes, `data.example_probes`). It runs in
the controller's process, so it shows what an honest controller's traffic
carries; a dishonest controller would not run it. It finds a canary or a
probe as exact bytes only: a leak that is encoded, scaled, cast or mixed
(a model update is computed from every example) goes unseen.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ChannelAudit"]


@dataclasses.dataclass
class ChannelAudit:
    """Every gRPC message between the controller and one worker: bytes each way, and what it carries.

    Each message is searched, in both directions, for each of `canaries`
    and each of `probes`. A hit is recorded in `found` as (direction,
    method, mark). `bytes_sent` and `bytes_received` are the serialized
    sizes of the requests and answers, `calls` the number of requests. Pass
    one as a worker's `audit` (it is a `runtime.workers.MessageRecorder`).
    """

    canaries: tuple[bytes, ...] = ()
    probes: tuple[bytes, ...] = ()
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0
    found: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        marks = (*self.canaries, *self.probes)
        if any(len(mark) < 8 for mark in marks):
            raise ValueError("Every canary and probe must be at least 8 bytes long: a shorter one would be "
                             "found by chance in the model's own numbers.")
        self._canaries = frozenset(self.canaries)

    def record(self, direction: str, method: str, message) -> None:
        data = message.SerializeToString()
        if direction == "sent":
            self.calls += 1
            self.bytes_sent += len(data)
        else:
            self.bytes_received += len(data)
        self.found += [(direction, method, mark) for mark in (*self.canaries, *self.probes) if mark in data]

    @property
    def canary_hits(self) -> int:
        """Messages (counted once per canary found in them) that carried a canary."""
        return sum(1 for _, _, mark in self.found if mark in self._canaries)

    @property
    def example_hits(self) -> int:
        """Messages (counted once per probe found in them) that carried raw example bytes."""
        return len(self.found) - self.canary_hits
