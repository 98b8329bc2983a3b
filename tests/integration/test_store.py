"""The event store and submit on a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import RedisServer
from tests.unit.core import cmd, envelopes
from vpcq.errors import ConcurrencyError, DomainError
from vpcq.events.blocking import BlockingRedis
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue
from vpcq.events.schema import ChangeApplied, ChangeFailed, Envelope, VpcCreated
from vpcq.events.store import EventStore
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import command_record
from vpcq.orchestrator.service import Orchestrator, StateLoader
from vpcq.orchestrator.state import INITIAL


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["asyncio", "blocking"])
def client(request, redis_url):
    """The store's contract on each client it runs on: redis.asyncio (the workers) and the
    blocking one (the CLI). Takes the asyncio connection, gives what the store is to use."""
    opened = []

    def on(r):
        if request.param == "asyncio":
            return r
        opened.append(BlockingRedis.connect(redis_url))
        return opened[-1]

    yield on
    for b in opened:
        b.sock.close()


async def _store(url, on=lambda r: r):
    r = await connect(url)
    return r, EventStore(on(r))


def test_append_read_and_follow(redis_url):
    async def go():
        r, store = await _store(redis_url)
        events = decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL)
        envs = envelopes(INITIAL, events, "c1")
        assert await store.append(envs, expected_version=0) == 2
        got = await store.read()
        assert got == envs
        assert [e.seq for e in await store.read(after=1)] == [2]
        assert [e.seq for e in await store.read(after=0, upto=1)] == [1]

        async def first_new():
            async for env in store.follow(after=2, block_ms=100):
                return env

        task = asyncio.create_task(first_new())
        await asyncio.sleep(0.05)
        more = envelopes(INITIAL, events, "c2")
        await store.append(more, expected_version=None)
        env = await asyncio.wait_for(task, 5)
        assert env.seq == 3 and env.command_id == "c2"
        await r.aclose()

    run(go())


def test_append_at_a_stale_version_raises_and_appends_nothing(redis_url, client):
    async def go():
        r, store = await _store(redis_url, client)
        envs = envelopes(INITIAL, decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL), "c")
        await store.append(envs, expected_version=0)
        with pytest.raises(ConcurrencyError) as e:
            await store.append(envs, expected_version=0)
        assert e.value.actual == 2
        assert await store.version() == 2 and len(await store.read()) == 2
        await r.aclose()

    run(go())


def test_reading_pages_through_a_long_log(redis_url, client):
    async def go():
        r, store = await _store(redis_url, client)
        envs = envelopes(INITIAL, decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL), "c")
        batch = []
        for i in range(6000):
            batch.append(envs[0].model_copy(update={"seq": i + 1, "command_id": f"c{i}"}))
        for i in range(0, len(batch), 1000):
            await store.append(batch[i : i + 1000], expected_version=None)
        got = await store.read()
        assert [e.seq for e in got] == list(range(1, 6001))
        await r.aclose()

    run(go())


def test_pages_are_read_as_redis_sends_them(redis_url, client):
    """The store reads pages without the client's conversion of each entry into a dict (see
    RAW_XRANGE): on both clients an entry comes as [id, [field, value]], and a read from the
    start or from the middle of a commit gives the same events as folding them."""
    async def go():
        r, store = await _store(redis_url, client)
        events = decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL)
        envs = envelopes(INITIAL, events, "c1")
        await store.append(envs, expected_version=0)
        (entry,) = await store._range("-", "+")
        assert entry[0] == b"1-0" and list(entry[1][::2]) == [b"c"] and len(entry[1]) == 2
        assert await store.read() == envs
        assert [e.seq for e in await store.read(after=1)] == [2]  # inside the first commit
        await r.aclose()

    run(go())


def test_eight_racing_creates_of_one_name_give_exactly_one_vpc(redis_url):
    async def one(i):
        r = await connect(redis_url)
        store = EventStore(r)
        orch = Orchestrator(r, store, JobQueue(r), f"racer{i}@host")
        try:
            await orch.submit(cmd("create-vpc", name="same", cidr="10.0.0.0/16"))
            return "ok"
        except DomainError as e:
            return e.field
        finally:
            await r.aclose()

    async def go():
        results = await asyncio.gather(*(one(i) for i in range(8)))
        r, store = await _store(redis_url)
        created = [e for e in await store.read() if isinstance(e.event, VpcCreated)]
        await r.aclose()
        return results, created

    results, created = run(go())
    assert sorted(results) == ["name"] * 7 + ["ok"]
    assert len(created) == 1


def test_racing_creates_of_different_names_all_land_with_distinct_link_nets(redis_url):
    async def one(i):
        r = await connect(redis_url)
        orch = Orchestrator(r, EventStore(r), JobQueue(r), "t@h")
        await orch.submit(cmd("create-vpc", name=f"v{i}", cidr=f"10.{i}.0.0/16"))
        await r.aclose()

    async def go():
        await asyncio.gather(*(one(i) for i in range(8)))
        r, store = await _store(redis_url)
        state = await StateLoader(r, store).load()
        await r.aclose()
        return state

    state = run(go())
    assert len(state.vpcs) == 8
    assert len({v.uplink.net for v in state.vpcs.values()}) == 8


def test_submit_enqueues_an_apply_job_per_vpc(redis_url):
    async def go():
        r, store = await _store(redis_url)
        orch = Orchestrator(r, store, JobQueue(r), "t@h")
        await orch.submit(cmd("create-vpc", name="a", cidr="10.0.0.0/16"))
        queued = await r.zrange("vpcq:jobs", 0, -1)
        await r.aclose()
        return queued

    assert run(go()) == [b"apply:a:2"]


def test_a_batch_is_validated_whole_and_appended_atomically(redis_url, client):
    async def go():
        r, store = await _store(redis_url, client)
        orch = Orchestrator(store.redis, store, JobQueue(store.redis), "t@h")
        with pytest.raises(DomainError) as e:
            await orch.submit_batch([
                cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
                cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
                cmd("add-subnet", vpc="a", name="db", cidr="10.0.1.0/25"),
            ])
        assert e.value.index == 2
        assert await store.version() == 0
        subs = await orch.submit_batch([
            cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
            cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
        ])
        assert [s.first_seq for s in subs] == [1, 3]
        await r.aclose()

    run(go())


def test_snapshot_cache_gives_the_same_state_as_a_full_replay(redis_url, monkeypatch):
    from vpcq.orchestrator import loader

    monkeypatch.setattr(loader, "SNAPSHOT_EVERY", 5)

    async def go():
        r, store = await _store(redis_url)
        orch = Orchestrator(r, store, JobQueue(r), "t@h")
        for i in range(6):
            await orch.submit(cmd("create-vpc", name=f"v{i}", cidr=f"10.{i}.0.0/16"))
        assert await r.exists(loader.SNAPSHOT_KEY)
        assert not await r.exists("vpcq:snapshot")  # the layout before, removed
        cached = await StateLoader(r, store).load()  # snapshot + tail
        full = await StateLoader(r, store).at(await store.version())
        await r.aclose()
        return cached, full

    cached, full = run(go())
    assert cached == full


def test_acknowledged_appends_survive_redis_sigkill(tmp_path):
    server = RedisServer(tmp_path / "r")
    server.start()
    try:
        async def write():
            r, store = await _store(server.url)
            orch = Orchestrator(r, store, JobQueue(r), "t@h")
            for i in range(50):
                await orch.submit(cmd("create-vpc", name=f"v{i}", cidr=f"10.{i}.0.0/16"))
            await r.aclose()

        run(write())
        server.kill()
        server.start()

        async def read():
            r, store = await _store(server.url)
            state = await StateLoader(r, store).load()
            await r.aclose()
            return state

        assert sorted(run(read()).vpcs) == sorted(f"v{i}" for i in range(50))
    finally:
        server.stop()


def test_reads_that_start_or_end_inside_a_commit_get_exactly_the_events_asked(redis_url, client):
    async def go():
        r, store = await _store(redis_url, client)
        orch = Orchestrator(store.redis, store, JobQueue(store.redis), "t@h")
        await orch.submit(cmd("create-vpc", name="a", cidr="10.0.0.0/16"))  # 1-2
        await orch.submit(cmd("create-vpc", name="b", cidr="10.1.0.0/16"))  # 3-4
        await orch.submit(cmd("peer-vpcs", a="a", b="b"))  # 5-6
        assert await r.xlen("vpcq:log") == 3  # one entry per command
        seqs = [(after, upto, [e.seq for e in await store.read(after, upto)])
                for after in range(7) for upto in range(7)]
        followed = []
        async for env in store.follow(after=3, block_ms=50):
            followed.append(env.seq)
            if env.seq == 6:
                break
        await r.aclose()
        return seqs, followed

    seqs, followed = run(go())
    for after, upto, got in seqs:
        assert got == list(range(after + 1, upto + 1)), (after, upto, got)
    assert followed == [4, 5, 6]


def test_a_log_written_one_envelope_per_entry_still_replays(redis_url):
    async def go():
        r, store = await _store(redis_url)
        events = decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL)
        for env in envelopes(INITIAL, events, "old"):  # the first layout, as it was written
            await r.xadd("vpcq:log", {"e": env.model_dump_json(exclude={"seq"})}, id=f"{env.seq}-0")
        await r.set("vpcq:version", 2)
        await Orchestrator(r, store, JobQueue(r), "t@h").submit(
            cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"))
        state = await StateLoader(r, store).load()
        log = await store.read()
        await r.aclose()
        return state, log

    state, log = run(go())
    assert [e.seq for e in log] == [1, 2, 3, 4]
    assert [e.command_id for e in log][:2] == ["old", "old"]
    assert list(state.vpcs["a"].subnets) == ["web"] and state.commands["old"].kind == "create-vpc"


def test_a_command_is_found_in_the_log_by_its_id_pending_or_finished(redis_url):
    async def go():
        r, store = await _store(redis_url)
        # a log written before the command index: found by reading the log
        events = decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), INITIAL)
        for env in envelopes(INITIAL, events, "old"):
            await r.xadd("vpcq:log", {"e": env.model_dump_json(exclude={"seq"})}, id=f"{env.seq}-0")
        await r.set("vpcq:version", 2)
        found = {"old, nothing indexed yet": await store.command("old")}
        orch = Orchestrator(r, store, JobQueue(r), "t@h", ids=iter(["corr", "web", "corr2", "db"]).__next__)
        await orch.submit(cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"))
        await orch.submit(cmd("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24"))
        for cid, end in (("old", ChangeApplied(command_id="old", vpcs=("a",))),
                         ("web", ChangeFailed(command_id="web", vpcs=("a",), reason="boom"))):
            await store.append([Envelope(command_id=cid, correlation_id="c", actor="w@h",
                                         time="t", event=end)], expected_version=None)
        for cid in ("old", "web", "db", "nope"):
            found[cid] = await store.command(cid)
        index = await r.hgetall("vpcq:commands")
        await r.aclose()
        return found, index

    found, index = run(go())
    assert index == {b"web": b"3", b"db": b"5"}  # the seq of each one's CommandAccepted
    records = {k: command_record(*v) if v[0] is not None else None for k, v in found.items()}
    assert records["old, nothing indexed yet"] == records["old"]._replace(status="pending")
    assert records["old"][1:7] == ("create-vpc", 1, 2, ("a",), "applied", None)
    assert records["web"][1:7] == ("add-subnet", 3, 4, ("a",), "failed", "boom")
    assert records["db"][1:7] == ("add-subnet", 5, 6, ("a",), "pending", None)
    assert records["db"].actor == "t@h" and records["nope"] is None


def test_an_outcome_is_recorded_once_even_when_a_job_reports_twice(redis_url, client):
    async def go():
        r, store = await _store(redis_url, client)
        orch = Orchestrator(store.redis, store, JobQueue(store.redis), "t@h")
        sub = await orch.submit(cmd("create-vpc", name="a", cidr="10.0.0.0/16"))
        done = Envelope(command_id=sub.command_id, correlation_id="k", actor="w@h", time="t",
                        event=ChangeApplied(command_id=sub.command_id, vpcs=("a",)))
        first = await store.append([done], expected_version=None)
        again = await store.append([done], expected_version=None)
        log = await store.read()
        await r.aclose()
        return first, again, log

    first, again, log = run(go())
    assert first == again == 3
    assert [e.type for e in log] == ["CommandAccepted", "VpcCreated", "ChangeApplied"]


def test_an_outcome_fenced_by_locks_its_worker_lost_is_refused_and_writes_nothing(redis_url):
    """A worker whose locks lapsed (its loop stalled, or Redis was out of reach) may have
    been overtaken by another: what it would record is refused, and so is the next step."""
    import time

    from vpcq.errors import LockLost
    from vpcq.workers.locks import Locks

    async def go() -> None:
        r = await connect(redis_url)
        store = EventStore(r)
        locks = Locks(r, ttl_ms=300)
        outcome = envelopes(INITIAL, [ChangeApplied(command_id="c1", vpcs=("a",))], "c1")
        async with locks.hold(["a", "b"]) as lease:
            lease.check()  # held, and renewed while the loop runs
            await asyncio.sleep(0.6)
            lease.check()
            time.sleep(0.5)  # the loop stalls: no renewal, the locks lapse
            with pytest.raises(LockLost):
                lease.check()
            assert await r.get("vpcq:lock:a") is None
            async with locks.hold(["a"]):  # another worker takes one of them
                with pytest.raises(LockLost):
                    await store.append(outcome, expected_version=None, fence=lease)
        assert await store.version() == 0 and await r.xlen("vpcq:log") == 0
        async with locks.hold(["a"]) as mine:  # a lease still held records
            assert await store.append(outcome, expected_version=None, fence=mine) == 1
        await r.aclose()

    asyncio.run(go())


def test_locks_are_taken_all_at_once_or_none(redis_url):
    """A holder takes every lock of its change in one step: one held by another worker
    makes it Busy naming that one, and it keeps none of the others; its own go on release."""
    from vpcq.workers.locks import Busy, Locks

    async def go() -> None:
        r = await connect(redis_url)
        locks = Locks(r)
        async with locks.hold(["b"]):
            with pytest.raises(Busy, match="vpc b is busy"):
                async with locks.hold(["c", "a", "b", "d"]):
                    pass
            assert await r.exists("vpcq:lock:a", "vpcq:lock:c", "vpcq:lock:d") == 0
            assert await r.exists("vpcq:lock:b") == 1  # the other holder's, untouched
        assert await r.exists("vpcq:lock:b") == 0
        names = [f"v{i}" for i in range(300)]
        async with locks.hold(names) as lease:
            assert lease.names == sorted(names)
            assert await r.exists(*(locks.key(n) for n in names)) == 300
        assert await r.exists(*(locks.key(n) for n in names)) == 0
        await r.aclose()

    asyncio.run(go())
