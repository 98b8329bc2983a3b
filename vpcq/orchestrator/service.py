"""submit(): the one impure runner around decide — load, decide, append, enqueue."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from vpcq.config import KEY_PREFIX
from vpcq.errors import ConcurrencyError, DomainError
from vpcq.events.commands import Command, Rollback
from vpcq.events.jobs import JobQueue
from vpcq.events.schema import ChangeApplied, CommandAccepted, Envelope
from vpcq.events.store import EventStore, no_gc
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import Folder
from vpcq.orchestrator.snapshot import dump_state, load_state
from vpcq.orchestrator.state import INITIAL, State

MAX_RETRIES = 200
SNAPSHOT_EVERY = 2000
# Versioned: a snapshot of another layout is not read as this one's. 2: the state holds
# pending commands only (finished ones leave it). 3: a pending command keeps its arguments.
# 4: and the host that applies it.
SNAPSHOT_KEY = f"{KEY_PREFIX}:snapshot:4"
OLD_SNAPSHOT_KEYS = tuple(f"{KEY_PREFIX}:snapshot{v}" for v in ("", ":2", ":3"))  # removed on write


@dataclass(frozen=True)
class Submitted:
    command_id: str
    first_seq: int
    last_seq: int
    vpcs: tuple[str, ...]
    host: str = ""  # whose workers apply it, as decided ("": no VPC, nothing to apply)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class StateLoader:
    """The current state: a snapshot (if any) plus the tail of the log, cached in-process."""

    def __init__(self, redis: Redis, store: EventStore) -> None:
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


class Orchestrator:
    """Validates commands into events, appends them with optimistic concurrency, enqueues."""

    def __init__(
        self,
        redis: Redis,
        store: EventStore,
        queue: JobQueue,
        actor: str,
        clock: Callable[[], str] = utc_now,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self.store = store
        self.queue = queue
        self.loader = StateLoader(redis, store)
        self.actor = actor
        self.clock = clock
        self.ids = ids

    async def submit(self, command: Command, correlation_id: str | None = None) -> Submitted:
        """Append the events of one command; returns its id and where it landed."""
        return (await self.submit_batch([command], correlation_id))[0]

    async def submit_batch(
        self, commands: Sequence[Command], correlation_id: str | None = None
    ) -> list[Submitted]:
        """Decide every command on the state plus the batch's earlier commands; append all
        atomically or nothing. A rejected command raises DomainError with its index."""
        correlation = correlation_id or self.ids()
        cmd_ids = [self.ids() for _ in commands]
        for attempt in range(MAX_RETRIES):
            # one Folder for the whole batch: each command is decided on a view of the state
            # plus the commands before it, and folding it costs its own events, not a copy of
            # every map of the state (which would make a batch quadratic in its commands)
            folder = Folder(await self.loader.load())
            state = folder.build()
            envelopes: list[Envelope] = []
            results: list[Submitted] = []
            jobs: dict[tuple[str, str], None] = {}  # (VPC, host): a job for each, in order
            seq = state.seq
            for i, (command, cid) in enumerate(zip(commands, cmd_ids, strict=True)):
                past = await self.loader.at(command.to_seq) if isinstance(command, Rollback) else None
                try:
                    events = decide(command, state, past)
                except DomainError as e:
                    if len(commands) > 1:
                        e.index = i
                    raise
                now = self.clock()
                envs = [
                    Envelope(
                        seq=seq + 1 + j,
                        command_id=cid,
                        correlation_id=correlation,
                        actor=self.actor,
                        time=now,
                        event=ev,
                    )
                    for j, ev in enumerate(events)
                ]
                accepted = events[0]
                assert isinstance(accepted, CommandAccepted)  # decide's first event, always
                if not accepted.vpcs:
                    # nothing for a worker to do (e.g. cleanup of an empty log): done now
                    envs.append(
                        Envelope(
                            seq=seq + 1 + len(envs),
                            command_id=cid,
                            correlation_id=correlation,
                            actor=self.actor,
                            time=now,
                            event=ChangeApplied(command_id=cid, vpcs=()),
                        )
                    )
                host = accepted.host or ""
                if host:  # a command with VPCs always has one
                    jobs.update(((v, host), None) for v in accepted.vpcs)
                for env in envs:
                    folder.envelope(env)
                state = folder.build()  # a view: decide never keeps it
                results.append(Submitted(cid, seq + 1, seq + len(envs), accepted.vpcs, host))
                seq += len(envs)
                envelopes += envs
            try:
                version = await self.store.append(envelopes, expected_version=envelopes[0].seq - 1)
            except ConcurrencyError:
                # someone appended first: re-read the tail and decide again, after a short
                # random pause so that racing clients do not collide in lockstep
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
                continue
            await self.queue.apply(jobs, version)
            return results
        raise ConcurrencyError(state.seq, await self.store.version())
