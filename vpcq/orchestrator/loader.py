"""The current state: a snapshot (if any) plus the tail of the log, folded as it is read."""

from __future__ import annotations

from vpcq.config import KEY_PREFIX
from vpcq.events.blocking import Requests
from vpcq.events.store import EventStore, no_gc
from vpcq.orchestrator.evolve import Folder
from vpcq.orchestrator.snapshot import dump_state, load_state
from vpcq.orchestrator.state import INITIAL, State

SNAPSHOT_EVERY = 2000
# Versioned: a snapshot of another layout is not read as this one's. 2: the state holds
# pending commands only (finished ones leave it). 3: a pending command keeps its arguments.
# 4: and the host that applies it. 5: a VPC has balancers, public ports and a DNS upstream.
SNAPSHOT_KEY = f"{KEY_PREFIX}:snapshot:5"
OLD_SNAPSHOT_KEYS = tuple(f"{KEY_PREFIX}:snapshot{v}" for v in ("", ":2", ":3", ":4"))  # removed on write


class StateLoader:
    """The current state: a snapshot (if any) plus the tail of the log, cached in-process."""

    def __init__(self, redis: Requests, store: EventStore) -> None:
        self.redis = redis
        self.store = store
        self.snapshot_key = SNAPSHOT_KEY
        self._state: State | None = None
        self._snapshot_seq = 0

    async def load(self) -> State:
        """The state folded up to the end of the log."""
        state = self._state
        if state is None:
            raw = await self.redis.get(self.snapshot_key)
            state = _snapshot(raw) if raw else INITIAL
            self._snapshot_seq = state.seq
        state = await self._fold(state, None)
        if state.seq - self._snapshot_seq >= SNAPSHOT_EVERY:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.snapshot_key, dump_state(state))
            pipe.delete(*OLD_SNAPSHOT_KEYS)
            await pipe.execute()
            self._snapshot_seq = state.seq
        self._state = state
        return state

    async def at(self, seq: int) -> State:
        """The state as it was right after event `seq` (a full replay)."""
        return await self._fold(INITIAL, seq)

    async def _fold(self, state: State, upto: int | None) -> State:
        """Fold the log after `state` as it is read: each commit is dropped once folded.

        Holding the whole decoded log first would cost its memory, and the cyclic garbage
        collector's passes over every one of its objects when it is re-enabled.
        """
        f = Folder(state)
        with no_gc():
            async for page in self.store.pages(after=state.seq, upto=upto):
                for c in page:
                    f.commit(c)
        return f.build()


def _snapshot(raw: bytes) -> State:
    """A stored snapshot, or the empty state if it was written by another version of vpcq
    (a snapshot is only a cache: the log is replayed instead)."""
    try:
        return load_state(raw)
    except ValueError:  # a ValidationError too: the log is replayed instead
        return INITIAL
