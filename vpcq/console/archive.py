"""The console's reader: the log through the event store, the observed facts beside it, and
the scene at any seq. It never writes to Redis (no snapshot either: StateLoader.load writes
one now and then, so the console folds the log itself, with the same Folder).

The whole log is folded once at start (the placement and the audit log need all of it), and
a scene is kept every CHECKPOINT events, so the picture at any seq costs a fold of at most
that many events.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator

from arq.connections import ArqRedis

from vpcq.config import KEY_PREFIX
from vpcq.console.model import Facts
from vpcq.console.scene import EMPTY, Scene, SceneFolder
from vpcq.console.timeline import Entry, Timeline
from vpcq.events.jobs import JobQueue
from vpcq.events.observed import Observed
from vpcq.events.schema import Commit, Envelope
from vpcq.events.store import EventStore, no_gc

CHECKPOINT = 1000  # events between two kept scenes


class Archive:
    """The current scene, the scenes of the past, the audit log."""

    def __init__(self, redis: ArqRedis, prefix: str = KEY_PREFIX) -> None:
        self.store = EventStore(redis, prefix)
        self.observed = Observed(redis)
        self.queue = JobQueue(redis)
        self.timeline = Timeline()
        self.scene = EMPTY  # as of the last `refresh`
        self._folder = SceneFolder()
        self._checkpoints: list[Scene] = [EMPTY]
        self._since_checkpoint = 0
        self._changed: dict[str, Entry] = {}

    @property
    def seq(self) -> int:
        """The last event folded (the scene may be behind it until `refresh`)."""
        return self._folder.seq

    async def load(self, upto: int | None = None) -> Scene:
        """Fold the log up to its end (or up to event `upto`)."""
        with no_gc():
            async for page in self.store.pages(after=self.seq, upto=upto):
                for c in page:
                    if isinstance(c, Commit):  # a quarantined entry is never folded
                        for env in c.envelopes():
                            self._take(env)
        return self.refresh()

    async def follow(self) -> AsyncIterator[int]:
        """Fold events as they are appended (a blocking read, woken by each append); yields
        the seq reached after each event. Runs until the caller stops."""
        async for env in self.store.follow(self.seq):
            self._take(env)
            yield env.seq

    def refresh(self) -> Scene:
        """The scene of every event folded so far."""
        if self.scene.seq != self.seq or self.scene is EMPTY:
            self.scene = self._folder.build()
        return self.scene

    def changed(self) -> list[Entry]:
        """The audit log's entries made or changed since the last call."""
        out = list(self._changed.values())
        self._changed.clear()
        return out

    async def at(self, seq: int) -> Scene:
        """The scene right after event `seq` (0: before the first); up to the last folded."""
        if seq >= self.seq:
            return self.refresh()
        i = bisect.bisect_right([c.seq for c in self._checkpoints], seq) - 1
        start = self._checkpoints[i]
        f = SceneFolder(start)
        async for page in self.store.pages(after=start.seq, upto=seq):
            f.commits(c for c in page if isinstance(c, Commit))
        return f.build()

    async def facts(self, scene: Scene) -> Facts:
        """What the workers observe now, for the hosts, deletions and balancers of `scene`."""
        workers = await self.queue.listening(scene.places.hosts)
        deleting = await self.observed.deleting(scene.ghosts)
        health = await self.observed.health(v.name for v in scene.state.vpcs.values() if v.balancers)
        return Facts(workers, deleting, health)

    def _take(self, env: Envelope) -> None:
        self._folder.envelope(env)
        entry = self.timeline.envelope(env)
        if entry is not None:
            self._changed[entry.id] = entry
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT:
            self._checkpoints.append(self._folder.build())
            self._since_checkpoint = 0
