"""A running worker and an entry written straight into the log by another Redis client: the
worker quarantines it, the kernel is untouched, and the next command is applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.kernel.conftest import Net, wait_until
from tests.kernel.test_lifecycle import host_snapshot
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue

pytestmark = pytest.mark.kernel


def _poison(net: Net, victim: Path, vpc: str) -> str:
    """A commit of a VPC whose router namespace is a path out of /run/netns to `victim` (a
    plain file: the namespace code unlinks one it finds where a namespace should be), and its
    job, as a client of the same Redis could write them. Returns the entry id."""

    async def go() -> str:
        r = await connect(net.redis_url)
        try:
            (_id, fields), *_ = await r.xrange("vpcq:log", "-", "+", count=1)
            body = json.loads(fields[b"c"])
            seq = int(await r.get("vpcq:version")) + 1
            body["s"], body["c"] = seq, "poison"
            accepted, created = body["e"][0], body["e"][1]
            accepted["vpcs"] = [vpc]
            created["name"] = vpc
            created["router_ns"] = "../.." + str(victim)
            created["uplink"]["b_ns"] = created["router_ns"]
            created["key"] = "abcdef"
            created["uplink"]["a_if"] = "vqabcdefu"
            await r.xadd("vpcq:log", {"c": json.dumps(body).encode()}, id=f"{seq}-0")
            await JobQueue(r).apply([(vpc, "default")], seq + 1)
            return f"{seq}-0"
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_a_worker_quarantines_a_poisoned_entry_and_the_kernel_is_untouched(worker: Net, tmp_path):
    c = worker.client()
    c.ok("create-vpc", name=worker.name("a"), cidr="10.80.0.0/16")
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    before = host_snapshot(worker)

    bad = _poison(worker, victim, worker.name("x"))
    log = worker.home / "log" / "w0.log"
    said = wait_until(lambda: any(json.loads(ln).get("entry") == bad
                                  for ln in log.read_text().splitlines() if '"rejected"' in ln), 20)
    assert said, log.read_text()[-2000:]

    c.ok("create-vpc", name=worker.name("b"), cidr="10.81.0.0/16")  # the worker goes on
    after = host_snapshot(worker)
    assert victim.read_text() == "root's file\n"
    assert worker.name("x") not in after["namespaces"] and "vqabcdefu" not in after["links"]
    assert worker.name("b") in after["namespaces"]
    # nothing of the poison: what changed is exactly b's
    assert before["namespaces"].splitlines() == [
        n for n in after["namespaces"].splitlines() if worker.name("b") not in n]
    assert sorted(c.state().vpcs) == sorted([worker.name("a"), worker.name("b")])
