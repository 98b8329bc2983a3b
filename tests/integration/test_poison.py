"""Entries written straight into a live log by another Redis client: every reader quarantines
them (one line naming the entry and why), `list`, `log` and submit go on, `fsck` lists them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import run_cli
from vpcq.events.connection import connect
from vpcq.events.store import EventStore
from vpcq.orchestrator.loader import StateLoader
from vpcq.workers.cache import LogCache


@pytest.fixture
def env(redis_url, home):
    return {"VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), env)


def first_commit(url: str) -> dict[str, Any]:
    """The commit of the first command (CommandAccepted, VpcCreated), as stored."""

    async def go() -> dict[str, Any]:
        r = await connect(url)
        try:
            (_id, fields), *_ = await r.xrange("vpcq:log", "-", "+", count=1)
            return json.loads(fields[b"c"])  # type: ignore[no-any-return]
        finally:
            await r.aclose()

    return _run(go())  # type: ignore[no-any-return]


def write(url: str, fields: dict[str, bytes], entry_id: str | None = None) -> str:
    """XADD an entry as any Redis client can: at the next sequence number unless told."""

    async def go() -> str:
        r = await connect(url)
        try:
            nxt = f"{int(await r.get('vpcq:version') or 0) + 1}-0"
            await r.xadd("vpcq:log", fields, id=entry_id or nxt)
            return entry_id or nxt
        finally:
            await r.aclose()

    return _run(go())  # type: ignore[no-any-return]


def commit_at(body: dict[str, Any], seq: int, change: Callable[[dict[str, Any]], None]) -> bytes:
    b = json.loads(json.dumps(body))
    b["s"] = seq
    change(b)
    return json.dumps(b).encode()


def _type(b: dict[str, Any]) -> None:
    b["e"][1]["type"] = "VpcHijacked"


def _missing(b: dict[str, Any]) -> None:
    del b["e"][1]["router_ns"]


def _version(b: dict[str, Any]) -> None:
    b["v"] = [1, 7]


def _netns(b: dict[str, Any]) -> None:  # a schema-valid event before: a path out of /run/netns
    b["e"][1]["name"] = "x"
    b["e"][1]["router_ns"] = "../../../root/.bashrc"


def _uplink(b: dict[str, Any]) -> None:  # host chain rules by interface name
    b["e"][1]["name"] = "x"
    b["e"][1]["interface"] = "eth0 -j ACCEPT"


def _name_nl(b: dict[str, Any]) -> None:
    b["e"][1]["name"] = "x\n"


def _actor(b: dict[str, Any]) -> None:  # a forged line in `vpcq log`
    b["a"] = "root@host\n     9  2026-01-01  admin@host  VpcDeleted"


def _reserved(b: dict[str, Any]) -> None:
    b["e"][1]["name"] = "x"
    b["e"][1]["cidr"] = "127.0.0.0/8"


def _ns_of_another(b: dict[str, Any]) -> None:  # a valid name, but not the one vpcq derives
    b["e"][1]["name"] = "x"
    b["e"][1]["router_ns"] = "vpcq_a"


POISON: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown type": _type, "missing field": _missing, "bad schema version": _version,
    "netns path": _netns, "interface injection": _uplink, "newline in a name": _name_nl,
    "control character in the actor": _actor, "reserved range": _reserved,
    "another VPC's namespace": _ns_of_another,
}  # fmt: skip


def poisoned(env: dict[str, str], url: str, what: str) -> str:
    """A log with VPC a, then the poison `what`; the poison's entry id."""
    assert cli(env, "create-vpc", "a", "10.0.0.0/16", "--no-wait").returncode == 0
    if what == "not JSON":
        return write(url, {"c": b"{this is not json"})
    if what == "no commit field":
        return write(url, {"x": b"1"})
    if what == "id not N-0":
        return write(url, {"c": commit_at(first_commit(url), 9, lambda b: None)}, "9-5")
    if what == "seq not its id":
        return write(url, {"c": commit_at(first_commit(url), 1, lambda b: None)})
    if what == "inside the entry before":  # a valid commit overlapping the one before it
        return write(url, {"c": commit_at(first_commit(url), 2, lambda b: None)}, "2-0")
    if what == "far ahead":  # a non-commit with an id past the version: appends go after it
        return write(url, {"c": b"[]"}, "50-0")
    return write(url, {"c": commit_at(first_commit(url), 3, POISON[what])})  # after a's two


KINDS = ["not JSON", "no commit field", "id not N-0", "seq not its id", "inside the entry before",
         "far ahead", *POISON]


@pytest.mark.parametrize("what", KINDS)
def test_a_poisoned_entry_is_quarantined_and_everything_goes_on(env, redis_url, what):
    bad = poisoned(env, redis_url, what)

    p = cli(env, "create-vpc", "b", "10.1.0.0/16", "--no-wait")
    assert p.returncode == 0, p.stderr
    (warning,) = p.stderr.strip().splitlines()  # one line naming the entry and why
    assert warning.startswith(f"vpcq: warning: log entry {bad} rejected: ") and "Traceback" not in warning

    p = cli(env, "list", "--json")
    assert p.returncode == 0, p.stderr
    vpcs = json.loads(p.stdout)["vpcs"]
    assert sorted(v["name"] for v in vpcs) == ["a", "b"]  # the poison folded nothing
    assert len(p.stderr.strip().splitlines()) == 1 and bad in p.stderr

    p = cli(env, "log")
    assert p.returncode == 0 and not p.stderr, p.stderr
    lines = p.stdout.splitlines()
    rejected = [ln for ln in lines if "REJECTED" in ln]
    assert len(rejected) == 1 and f"entry {bad}:" in rejected[0]
    assert sum("VpcCreated" in ln and "REJECTED" not in ln for ln in lines) == 2  # a, b only
    assert not any("admin@host" in ln and "REJECTED" not in ln for ln in lines)

    p = cli(env, "log", "--json")
    assert p.returncode == 0
    items = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [i["entry"] for i in items if i["type"] == "Rejected"] == [bad]

    p = cli(env, "fsck")
    assert p.returncode == 1 and f"log entry {bad} rejected: " in p.stdout, p.stdout

    # a worker's fold steps over it: it never sees the poison, and appends at the log's version
    async def worker_view() -> tuple[int, int, list[str]]:
        r = await connect(redis_url)
        try:
            store = EventStore(r)
            cache = LogCache(store)
            state = await cache.refresh()
            loaded = await StateLoader(r, store).load()
            assert loaded == state
            return state.seq, await store.version(), sorted(state.vpcs)
        finally:
            await r.aclose()

    seq, version, names = _run(worker_view())
    assert seq == version and names == ["a", "b"]


def test_a_clean_log_passes_fsck(env):
    assert cli(env, "create-vpc", "a", "10.0.0.0/16", "--no-wait").returncode == 0
    p = cli(env, "fsck")
    assert p.returncode == 0 and p.stdout.strip() == "the log is sound", p.stdout


def test_a_version_key_that_is_not_a_number_does_not_stop_appends(env, redis_url):
    assert cli(env, "create-vpc", "a", "10.0.0.0/16", "--no-wait").returncode == 0

    async def garble() -> None:
        r = await connect(redis_url)
        await r.set("vpcq:version", "garbage")
        await r.aclose()

    _run(garble())
    p = cli(env, "fsck")
    assert p.returncode == 1 and "not a number" in p.stdout
    p = cli(env, "create-vpc", "b", "10.1.0.0/16", "--no-wait", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["seq"] == 3, p.stdout + p.stderr
    assert cli(env, "fsck").returncode == 0


@pytest.mark.parametrize("change", ["netns", "actor"])
def test_a_snapshot_another_client_wrote_is_checked_as_the_log_is(env, redis_url, change):
    """The snapshot is a cache of the fold: one that breaks the events' types is not used
    (the log is replayed instead)."""
    from vpcq.orchestrator.loader import SNAPSHOT_KEY
    from vpcq.orchestrator.snapshot import dump_state

    assert cli(env, "create-vpc", "a", "10.0.0.0/16", "--no-wait").returncode == 0
    assert cli(env, "add-subnet", "a", "web", "10.0.1.0/24", "--no-wait").returncode == 0

    async def plant() -> None:
        r = await connect(redis_url)
        try:
            state = await StateLoader(r, EventStore(r)).load()
            clean = dump_state(state).decode()
            snap = (clean.replace('"a-web"', '"../../../root/.bashrc"') if change == "netns"
                    else clean.replace(f'"{state.commands[state.pending[0]].actor}"',
                                      '"root@host\\u2028forged"'))
            assert snap != clean
            await r.set(SNAPSHOT_KEY, snap)
        finally:
            await r.aclose()

    _run(plant())

    async def actors() -> list[str]:
        r = await connect(redis_url)
        try:
            state = await StateLoader(r, EventStore(r)).load()
            return [c.actor for c in state.commands.values()]
        finally:
            await r.aclose()

    assert not any("forged" in a for a in _run(actors()))
    p = cli(env, "list", "--json")
    assert p.returncode == 0, p.stderr
    (vpc,) = json.loads(p.stdout)["vpcs"]
    assert json.dumps(vpc).count("../") == 0 and "forged" not in p.stdout
