"""The worker's in-memory fold of the log, with every VPC's history of views."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable, Iterator, Set

from vpcq.config import DEFAULT_HOST
from vpcq.events.schema import Commit, Envelope, Rejected
from vpcq.events.store import EventStore
from vpcq.orchestrator.evolve import Folder
from vpcq.orchestrator.state import INITIAL, CommandRecord, State, VpcView, pair


def envelopes(items: Iterable[Commit | Rejected], f: Folder) -> Iterator[Envelope]:
    """The events of the commits read; a rejected entry is never applied, but the fold
    steps over it (so the version this worker appends at is the log's)."""
    for c in items:
        if isinstance(c, Commit):
            yield from c.envelopes()
        else:
            f.skip(c)


class LogCache:
    """Folds the tail on demand; answers "how did VPC x look at seq n" without a replay."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.state: State = INITIAL
        self._seqs: dict[str, list[int]] = {}
        self._views: dict[str, list[VpcView]] = {}
        self._lock = asyncio.Lock()  # jobs run concurrently; the history must stay in order

    async def refresh(self) -> State:
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> State:
        items = [c async for page in self.store.pages(after=self.state.seq) for c in page]
        if not items:
            return self.state
        f = Folder(self.state)
        for env in envelopes(items, f):
            f.envelope(env)
            for v in env.vpcs:
                vpc = f.vpcs.get(v)
                peers = vpc.peers if vpc is not None else ()
                peerings = tuple(f.peerings[pair(v, o)] for o in peers)
                self._seqs.setdefault(v, []).append(env.seq)
                self._views.setdefault(v, []).append(VpcView(f.vpcs.get(v), peerings))
        self.state = f.build()
        return self.state

    def view_at(self, vpc: str, seq: int) -> VpcView:
        """The VPC as the log had it right after event `seq`."""
        seqs = self._seqs.get(vpc)
        if not seqs:
            return VpcView(None)
        i = bisect.bisect_right(seqs, seq)
        return self._views[vpc][i - 1] if i else VpcView(None)

    def known(self) -> list[str]:
        """Every VPC the log has ever named."""
        return sorted(self._seqs)

    def host_of(self, vpc: str) -> str:
        """The host whose workers build `vpc` (also once it is deleted)."""
        v = self.last_view(vpc).vpc
        return v.host if v is not None else DEFAULT_HOST

    def next_jobs(self, state: State, vpcs: Iterable[str], skip: Set[str] = frozenset()
                  ) -> list[tuple[str, str]]:
        """(VPC, host) for each VPC's next job: the host its first pending command (not in
        `skip`: just settled) was decided to be applied on, else the VPC's own host."""
        wanted = set(vpcs)
        first: dict[str, CommandRecord] = {}
        for cid in state.pending:
            c = state.commands[cid]
            if cid not in skip:
                for v in c.vpcs:
                    if v in wanted:
                        first.setdefault(v, c)
        return [(v, first[v].host if v in first else self.host_of(v)) for v in sorted(wanted)]

    def last_view(self, vpc: str) -> VpcView:
        """The VPC as it last existed (to find what it may have left in the kernel)."""
        for view in reversed(self._views.get(vpc, [])):
            if view.vpc is not None:
                return view
        return VpcView(None)
