"""submit(): the one impure runner around decide — load, decide, append, enqueue."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from vpcq.errors import ConcurrencyError, DomainError
from vpcq.events.blocking import Requests, pause
from vpcq.events.commands import Command, Rollback
from vpcq.events.jobs import JobQueue
from vpcq.events.schema import ChangeApplied, CommandAccepted, Envelope
from vpcq.events.store import EventStore
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import Folder
from vpcq.orchestrator.loader import StateLoader

MAX_RETRIES = 200


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


class Orchestrator:
    """Validates commands into events, appends them with optimistic concurrency, enqueues."""

    def __init__(
        self,
        redis: Requests,
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
                await pause(self.store.redis, random.uniform(0, 0.001 * min(attempt, 20)))
                continue
            await self.queue.apply(jobs, version)
            return results
        raise ConcurrencyError(state.seq, await self.store.version())
