"""The console's HTTP API against a real Redis, through the real `vpcq ui` process: the token
gate, the topology at a given seq, the live event stream, the audit log, the exports, and
`vpcq graph`. No workers: outcomes are appended as a worker appends them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.exceptions import NoPermissionError

from tests.helpers import Client, Console, run_cli
from vpcq.events.commands import parse_command
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue
from vpcq.events.observed import Health, Observed
from vpcq.events.schema import ChangeApplied, ChangeFailed
from vpcq.events.store import EventStore
from vpcq.orchestrator.service import Orchestrator, StateLoader, Submitted

pytestmark = pytest.mark.redis


@pytest.fixture
def env(redis_url: str, home) -> dict[str, str]:
    return {"VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)}


@pytest.fixture
def console(env: dict[str, str]) -> Iterator[Console]:
    c = Console(env)
    try:
        yield c
    finally:
        assert c.stop() == 0, c.stderr()


def submit(url: str, *commands: dict[str, Any], outcome: str | None = "applied") -> list[Submitted]:
    """Decide and append commands as the CLI does; then each one's outcome as a worker would."""

    async def go() -> list[Submitted]:
        r = await connect(url)
        try:
            store = EventStore(r)
            subs = await Orchestrator(r, store, JobQueue(r), "ann@lab").submit_batch(
                [parse_command(c) for c in commands])
        finally:
            await r.aclose()
        return subs

    subs = asyncio.run(go())
    for s in subs if outcome is not None else ():
        Client(url).report(ChangeApplied(command_id=s.command_id, vpcs=s.vpcs) if outcome == "applied"
                           else ChangeFailed(command_id=s.command_id, vpcs=s.vpcs, reason="no room"))
    return subs


A = [{"kind": "create-vpc", "name": "a", "cidr": "10.0.0.0/16"},
     {"kind": "add-subnet", "vpc": "a", "name": "web", "cidr": "10.0.1.0/24", "type": "public"}]


def authed(c: Console) -> httpx.Client:
    return httpx.Client(base_url=c.base, headers={"Authorization": f"Bearer {c.token}"}, timeout=10)


def test_every_request_without_the_token_is_refused(console: Console, redis_url: str):
    submit(redis_url, *A)
    c = console.start()
    paths = ["/", "/api/graph", "/api/events", "/api/timeline", "/api/command/x", "/api/export/svg",
             "/static/console.js", "/static/cytoscape.min.js", "/nothing-here"]
    with httpx.Client(base_url=c.base, timeout=10) as h:
        for path in paths:
            for headers, params in [({}, {}), ({}, {"token": "wrong"}),
                                    ({"Authorization": "Bearer wrong"}, {}),
                                    ({"Cookie": f"vpcq-console-{c.base.rsplit(':', 1)[1]}=wrong"}, {})]:
                r = h.get(path, headers=headers, params=params)
                assert r.status_code == 403, (path, headers, params, r.status_code)
                assert "refused" in r.text
        # the token in the URL: a cookie, and the token out of the address bar
        r = h.get("/", params={"token": c.token})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and c.token in cookie
        r = h.get("/api/graph", headers={"Cookie": cookie.split(";")[0]})
        assert r.status_code == 200 and r.json()["seq"] > 0
        assert "script-src 'self'" in r.headers["content-security-policy"]
        # a page of another site that a DNS rebinding pointed here is refused, token or not
        r = h.get("/api/graph", headers={"Host": f"evil.example:{c.base.rsplit(':', 1)[1]}",
                                         "Authorization": f"Bearer {c.token}"})
        assert r.status_code == 403
    with authed(c) as h:
        assert h.get("/").status_code == 200 and "vpcq console" in h.get("/").text
        assert h.get("/static/cytoscape.min.js").status_code == 200


def _ids(elements: list[dict[str, Any]]) -> set[str]:
    return {e["data"]["id"] for e in elements if e["data"]["kind"] in ("vpc", "subnet", "peering")}


def _expected(url: str, seq: int) -> set[str]:
    """What the orchestrator's own replay says existed right after `seq`."""

    async def go() -> Any:
        r = await connect(url)
        try:
            return await StateLoader(r, EventStore(r)).at(seq)
        finally:
            await r.aclose()

    state = asyncio.run(go())
    out = {f"vpc:{v.name}" for v in state.vpcs.values()}
    out |= {f"subnet:{v.name}/{s}" for v in state.vpcs.values() for s in v.subnets}
    out |= {f"peering:{k}" for k in state.peerings}
    return out


def test_the_topology_at_a_given_seq_is_the_replay_of_the_log_up_to_it(console: Console, redis_url: str):
    first = submit(redis_url, *A)
    then = first[-1].last_seq + 1  # right after the add-subnet's outcome
    submit(redis_url, {"kind": "add-subnet", "vpc": "a", "name": "db", "cidr": "10.0.2.0/24"},
           {"kind": "deploy-app", "vpc": "a", "subnet": "web", "port": 8000},
           {"kind": "create-vpc", "name": "b", "cidr": "10.1.0.0/16"})
    submit(redis_url, {"kind": "peer-vpcs", "a": "a", "b": "b"})
    c = console.start()
    with authed(c) as h:
        now = h.get("/api/graph").json()
        for seq in range(0, now["seq"] + 1):
            past = h.get("/api/graph", params={"seq": seq}).json()
            assert past["seq"] == seq and past["now"] == now["seq"]
            assert _ids(past["elements"]) == _expected(redis_url, seq), seq
        past = h.get("/api/graph", params={"seq": then}).json()
        assert _ids(past["elements"]) == {"vpc:a", "subnet:a/web"}
        got = {(x["op"], x["id"]): x["details"] for x in past["changes"]}
        assert got == {("added", "subnet:a/db"): [], ("added", "vpc:b"): [],
                       ("added", "peering:a|b"): [], ("changed", "subnet:a/web"): ["app: none → :8000"]}
        web = next(e for e in past["elements"] if e["data"]["id"] == "subnet:a/web")
        assert web["data"]["mark"] == "changed"
        # positions stay put: what exists then and now is drawn at the same place
        pos = {e["data"]["id"]: e["position"] for e in now["elements"] if "position" in e}
        for e in past["elements"]:
            if e.get("position") and e["data"]["id"] in pos and e["data"]["kind"] in ("subnet", "router"):
                assert e["position"] == pos[e["data"]["id"]]
        for bad in ("-1", "x", str(now["seq"] + 1)):
            r = h.get("/api/graph", params={"seq": bad})
            assert r.status_code == 400 and "seq" in r.json()["error"]


def test_a_balancer_is_drawn_with_its_targets_health_live_and_without_it_in_the_past(
        console: Console, redis_url: str, env):
    submit(redis_url, *A, {"kind": "add-subnet", "vpc": "a", "name": "db", "cidr": "10.0.2.0/24"},
           {"kind": "create-lb", "vpc": "a", "name": "front", "port": 80, "targets": ["web:9000", "db:9001"],
            "public": 8088})

    async def observe() -> None:
        r = await connect(redis_url)
        try:
            await Observed(r).set_health("a", {"front": {
                "web:9000": Health(True, "2026-01-01T00:00:05Z", "2026-01-01T00:00:09Z"),
                "db:9001": Health(False, "2026-01-01T00:00:07Z", "2026-01-01T00:00:09Z", "connection refused")}})
        finally:
            await r.aclose()

    asyncio.run(observe())
    c = console.start()
    with authed(c) as h:
        deadline = time.monotonic() + 10
        while True:  # the first picture is drawn before the facts are read
            now = h.get("/api/graph").json()
            data = {e["data"]["id"]: e["data"] for e in now["elements"]}
            if data["target:a/front/web:9000"]["title"] != ":9000" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        lb = data["balancer:a/front"]
        assert lb["kind"] == "balancer" and lb["lines"][0] == "front.a.internal"
        assert lb["lines"][2] == "2 targets · 1 up · 1 down"
        up, down = data["target:a/front/web:9000"], data["target:a/front/db:9001"]
        assert (up["source"], up["target"], up["title"]) == ("balancer:a/front", "subnet:a/web", ":9000 up")
        assert down["title"] == ":9001 down: connection refused" and down["color"] != up["color"]
        port = data["port:a/8088/tcp"]
        assert (port["source"], port["target"], port["title"]) == ("host:default", "balancer:a/front",
                                                                   "8088/tcp → front:80")
        past = h.get("/api/graph", params={"seq": now["seq"]}).json()  # time travel: nothing observed
        titles = {e["data"]["id"]: e["data"]["title"] for e in past["elements"] if e["data"]["kind"] == "target"}
        assert titles["target:a/front/web:9000"] == ":9000" and titles["target:a/front/db:9001"] == ":9001"
    p = run_cli(["graph", "--format", "dot"], env)
    assert p.returncode == 0, p.stderr
    assert "front.a.internal" in p.stdout and 'label="8088/tcp → front:80"' in p.stdout
    assert '"balancer:a/front" -- "subnet:a/db"' in p.stdout


async def _events(c: Console) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The event stream, parsed (server-sent events)."""
    async with httpx.AsyncClient(base_url=c.base, timeout=httpx.Timeout(10, read=30)) as h, \
            h.stream("GET", "/api/events", headers={"Authorization": f"Bearer {c.token}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event, data = "", ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event:
                yield event, json.loads(data)
                event, data = "", ""


def test_the_stream_sends_a_change_when_it_is_decided_and_again_within_a_second_of_its_outcome(
        console: Console, redis_url: str):
    submit(redis_url, *A)
    c = console.start()

    async def go() -> list[float]:
        stream = _events(c)
        event, hello = await anext(stream)
        assert event == "hello" and "subnet:a/web" in {e["data"]["id"] for e in hello["elements"]}
        took: list[float] = []
        for n in range(3):
            name = f"s{n}"
            (sub,) = await asyncio.to_thread(submit, redis_url, {
                "kind": "add-subnet", "vpc": "a", "name": name, "cidr": f"10.0.{10 + n}.0/24"}, outcome=None)
            status = await _status_of(stream, f"subnet:a/{name}")
            assert status == "pending"  # decided: drawn at once, as pending
            t0 = time.monotonic()
            await asyncio.to_thread(Client(redis_url).report, ChangeApplied(command_id=sub.command_id,
                                                                          vpcs=sub.vpcs))
            assert await _status_of(stream, f"subnet:a/{name}") == "ok"
            took.append(time.monotonic() - t0)
        await stream.aclose()
        return took

    took = asyncio.run(asyncio.wait_for(go(), 60))
    assert max(took) < 1.0, took


async def _status_of(stream: AsyncIterator[tuple[str, dict[str, Any]]], oid: str) -> str:
    async for event, data in stream:
        if event != "update":
            continue
        for e in data["add"] + data["update"]:
            if e["data"]["id"] == oid:
                return str(e["data"]["status"])
    raise AssertionError("the stream ended")


def test_the_audit_log_filters_by_vpc_and_tells_a_commands_whole_story(console: Console, redis_url: str):
    submit(redis_url, *A)
    submit(redis_url, {"kind": "create-vpc", "name": "b", "cidr": "10.1.0.0/16"})
    (failed,) = submit(redis_url, {"kind": "deploy-app", "vpc": "a", "subnet": "web"}, outcome="failed")
    c = console.start()
    with authed(c) as h:
        every = h.get("/api/timeline").json()
        assert [e["what"] for e in every["entries"]] == [
            "deploy-app a web --port 8000", "create-vpc b 10.1.0.0/16",
            "add-subnet a web 10.0.1.0/24 --type public", "create-vpc a 10.0.0.0/16"]
        assert every["entries"][0]["outcome"] == "failed" and every["entries"][0]["reason"] == "no room"
        assert every["entries"][0]["actor"] == "ann@lab" and every["vpcs"] == ["a", "b"]
        only_b = h.get("/api/timeline", params={"vpc": "b"}).json()["entries"]
        assert [e["what"] for e in only_b] == ["create-vpc b 10.1.0.0/16"]
        page = h.get("/api/timeline", params={"limit": 2}).json()
        assert len(page["entries"]) == 2 and page["more"]
        older = h.get("/api/timeline", params={"before": page["entries"][-1]["seq"]}).json()["entries"]
        assert [e["what"] for e in older] == [e["what"] for e in every["entries"][2:]]
        story = h.get(f"/api/command/{failed.command_id}").json()
        assert [x["type"] for x in story["events"]] == ["CommandAccepted", "AppDeployed", "ChangeFailed"]
        assert story["events"][-1]["summary"] == "failed: no room"
        assert h.get("/api/command/nope").status_code == 404


def test_the_exports_and_vpcq_graph_write_the_same_topology(console: Console, redis_url: str, env):
    subs = submit(redis_url, *A)
    submit(redis_url, {"kind": "create-vpc", "name": "b", "cidr": "10.1.0.0/16"},
           {"kind": "peer-vpcs", "a": "a", "b": "b"})
    c = console.start()
    seq = subs[-1].last_seq + 1
    with authed(c) as h:
        for fmt in ("dot", "mermaid", "svg"):
            served = h.get(f"/api/export/{fmt}", params={"seq": seq})
            assert served.status_code == 200 and "attachment" in served.headers["content-disposition"]
            p = run_cli(["graph", "--format", fmt, "--at", str(seq)], env)
            assert p.returncode == 0, p.stderr
            assert p.stdout == served.text, fmt
        svg = ET.fromstring(h.get("/api/export/svg").text)
        shown = " ".join(svg.itertext())
        assert "VPC b · 10.1.0.0/16" in shown and "peered · " in shown
        assert h.get("/api/export/png").status_code == 404
    p = run_cli(["graph", "--at", "100000"], env)
    assert p.returncode == 2 and p.stderr.startswith("vpcq: error: at: 100000 is beyond the end of the log")
    out = env["VPCQ_HOME"] + "/net.mmd"
    assert run_cli(["graph", "--format", "mermaid", "-o", out], env).returncode == 0
    with open(out) as f:
        assert f.read().startswith("flowchart TB")


def test_the_other_commands_never_load_starlette_or_uvicorn(env, redis_url: str):
    submit(redis_url, *A)
    code = (
        "import sys\n"
        "from vpcq.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['list']); main(['log']); main(['graph', '--format', 'svg'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_beyond_loopback_it_says_so_and_still_wants_the_token(env, redis_url: str):
    submit(redis_url, *A)
    c = Console(env, listen="0.0.0.0:0").start()
    try:
        port = c.base.rsplit(":", 1)[1]
        with httpx.Client(base_url=c.base, timeout=10) as h:
            # any Host name reaches it now (it is meant to be reached by other names)...
            r = h.get("/api/graph", headers={"Host": f"console.example:{port}",
                                             "Authorization": f"Bearer {c.token}"})
            assert r.status_code == 200
            # ...and nothing without the token
            assert h.get("/api/graph", headers={"Host": f"console.example:{port}"}).status_code == 403
    finally:
        assert c.stop() == 0, c.stderr()
    assert (f"vpcq ui: listening on 0.0.0.0:{port}, beyond this machine, over plain HTTP"
            in c.stderr()), c.stderr()


def test_ui_says_in_one_line_what_is_wrong_with_where_it_should_listen(env):
    p = run_cli(["ui", "--listen", "nowhere"], env)
    assert p.returncode == 2 and p.stderr.strip() == (
        "vpcq: error: listen: 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:8470)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli(["ui", "--listen", f"127.0.0.1:{port}"], env)
    assert p.returncode == 3, p.stderr
    assert p.stderr.strip() == f"vpcq: error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.fixture
def read_only(redis_url: str) -> Iterator[str]:
    """The session's Redis through an ACL user that may only read (streams, hashes, the
    workers' channel counts) and never write; dropped at the end."""
    user = f"console-{os.getpid()}"
    _admin(redis_url, "ACL", "SETUSER", user, "on", ">ro-secret", "~*", "&*",
           "-@all", "+@read", "+@connection", "+pubsub|numsub")
    try:
        yield redis_url.replace("unix://", f"unix://{user}:ro-secret@", 1)
    finally:
        _admin(redis_url, "ACL", "DELUSER", user)


def test_the_console_only_reads(redis_url: str, read_only: str, home):
    """`vpcq ui` and `vpcq graph` work with a Redis user that may not write anything."""
    submit(redis_url, *A)
    (pending,) = submit(redis_url, {"kind": "delete-subnet", "vpc": "a", "name": "web"}, outcome=None)
    env = {"VPCQ_REDIS_URL": read_only, "VPCQ_HOME": str(home)}
    c = Console(env).start()
    try:
        with authed(c) as h:
            for path in ["/", "/api/graph", "/api/graph?seq=2", "/api/timeline", "/api/export/svg",
                         f"/api/command/{pending.command_id}", "/static/console.js"]:
                assert h.get(path).status_code == 200, path

        async def stream() -> None:
            events = _events(c)
            assert (await anext(events))[0] == "hello"
            await asyncio.to_thread(submit, redis_url, {"kind": "create-vpc", "name": "b",
                                                        "cidr": "10.1.0.0/16"})
            async for event, data in events:
                if event == "update" and "vpc:b" in {e["data"]["id"] for e in data["add"]}:
                    await events.aclose()
                    return
            raise AssertionError("the stream ended")

        asyncio.run(asyncio.wait_for(stream(), 10))  # the log followed, as that user
        with authed(c) as h:  # and the observed facts read
            assert h.get("/api/graph").json()["status"] == {"log": "ok", "facts": "ok"}
        assert f"user={user_of(read_only)} " in _admin(redis_url, "CLIENT", "LIST")
        assert run_cli(["graph", "--format", "svg"], env).returncode == 0
    finally:
        assert c.stop() == 0, c.stderr()
    # and that user really may not write
    with pytest.raises(NoPermissionError, match=r"no permissions to run the 'set' command"):
        asyncio.run(_as(read_only, "SET", "x", "1"))


def user_of(url: str) -> str:
    return url.split("//", 1)[1].split(":", 1)[0]


async def _as(url: str, *args: str) -> Any:
    r = await connect(url)
    try:
        return await r.execute_command(*args)
    finally:
        await r.aclose()


def _admin(url: str, *args: str) -> str:
    out = asyncio.run(_as(url, *args))
    return out.decode() if isinstance(out, bytes) else str(out)
