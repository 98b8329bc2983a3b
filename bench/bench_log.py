"""The event log: replay of 100k events, submit throughput (1 and 8 clients), CLI start-up.

    sudo ./dev bench     (or: .venv/bin/python bench/bench_log.py)

Goals (issue 2): replay 100k events to state < 1 s; `vpcq --help` < 0.2 s.
Each figure is printed with a baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import embedded_redis, line, median
from pydantic_core import from_json

from vpcq.events.commands import parse_command
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue
from vpcq.events.schema import ChangeApplied, Envelope
from vpcq.events.store import PAGE, EventStore, no_gc
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import Folder, fold, fold_commits
from vpcq.orchestrator.loader import SNAPSHOT_KEY, StateLoader
from vpcq.orchestrator.service import Orchestrator
from vpcq.orchestrator.snapshot import dump_state
from vpcq.orchestrator.state import INITIAL

N_EVENTS = 100_000


def synthetic_log(n: int) -> list[Envelope]:
    """A realistic log: VPCs with subnets, apps, firewalls, peerings, deletes, outcomes."""
    f, out, i = Folder(INITIAL), [], 0
    fw = {"ingress": [{"protocol": "tcp", "port": "80", "action": "allow"}], "default": "deny"}
    while len(out) < n:
        v = f"v{i}"
        k = i % 250
        cmds = [
            {"kind": "create-vpc", "name": v, "cidr": f"10.{k}.0.0/16"},
            {"kind": "add-subnet", "vpc": v, "name": "web", "cidr": f"10.{k}.1.0/24", "type": "public"},
            {"kind": "add-subnet", "vpc": v, "name": "db", "cidr": f"10.{k}.2.0/24"},
            {"kind": "deploy-app", "vpc": v, "subnet": "web"},
            {"kind": "apply-firewall", "vpc": v, "subnet": "web", "firewall": fw},
        ]
        if i % 2:
            cmds.append({"kind": "peer-vpcs", "a": f"v{i - 1}", "b": v})
        if i >= 60:  # a steady state of about 60 live VPCs, as a long-lived host would have
            cmds.append({"kind": "delete-vpc", "name": f"v{i - 60}"})
        for c in cmds:
            cid = f"c{len(out)}"
            state = f.build()  # a read-only view for decide; the folder keeps growing
            try:
                events = decide(parse_command(c), state)
            except Exception:
                continue
            events.append(ChangeApplied(command_id=cid, vpcs=events[0].vpcs))
            envs = [Envelope(seq=state.seq + 1 + j, command_id=cid, correlation_id="bench",
                             actor="bench@host", time="2026-01-01T00:00:00.000+00:00", event=e)
                    for j, e in enumerate(events)]
            for env in envs:
                f.envelope(env)
            out += envs
        i += 1
    return out[:n]


async def replay_bench(url: str) -> None:
    print(f"replay of {N_EVENTS:,} events from Redis to state (goal < 1 s)")
    t0 = time.perf_counter()
    log = synthetic_log(N_EVENTS)
    line("building the synthetic log (decide + fold)", f"{time.perf_counter() - t0:.2f} s")
    r = await connect(url)
    await r.flushall()
    store = EventStore(r)
    for i in range(0, len(log), 5000):
        await store.append(log[i : i + 5000], expected_version=None)
    raw_s, full_s, snap_s = [], [], []
    loader = StateLoader(r, store)
    for _ in range(3):
        t0 = time.perf_counter()
        n = 0
        start = "-"
        with no_gc():  # baseline: only reading the raw entries (XRANGE, paged like the store)
            while True:
                page = await r.xrange("vpcq:log", start, "+", count=PAGE)
                n += len(page)
                if len(page) < PAGE:
                    break
                start = "(" + page[-1][0].decode()
        raw_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        state = await loader.at(N_EVENTS)  # the real path: read, decode, fold from event 1
        full_s.append(time.perf_counter() - t0)
    assert state.seq == N_EVENTS, state.seq
    raw = [fields[b"c"] for entry_id, fields in await r.xrange("vpcq:log", "-", "+")]
    t0 = time.perf_counter()
    with no_gc():  # baseline: what parsing the same JSON costs, before any validation or fold
        parsed = [json.loads(b) for b in raw]
    json_s = time.perf_counter() - t0
    assert sum(len(p["e"]) for p in parsed) == N_EVENTS
    t0 = time.perf_counter()
    with no_gc():  # baseline: the fastest parser at hand (Rust), still no validation or fold
        parsed = [from_json(b) for b in raw]
    rust_s = time.perf_counter() - t0
    assert sum(len(p["e"]) for p in parsed) == N_EVENTS
    del parsed
    commits = [c async for page in store.pages() for c in page]
    t0 = time.perf_counter()
    with no_gc():
        again = fold_commits(INITIAL, commits)
    fold_s = time.perf_counter() - t0
    assert again == state == fold(INITIAL, log)
    await r.set(SNAPSHOT_KEY, dump_state(fold(INITIAL, log[: N_EVENTS - 1000])))
    for _ in range(3):
        t0 = time.perf_counter()
        cached = await StateLoader(r, store).load()  # snapshot + the last 1,000 events
        snap_s.append(time.perf_counter() - t0)
    assert cached == state
    line("log entries (one per command's commit, one per outcome)", f"{n:,}",
         f"{N_EVENTS / n:.2f} events/entry")
    line("baseline: XRANGE of the raw entries only", f"{median(raw_s):.3f} s")
    line("baseline: json.loads of the same entries only", f"{json_s:.3f} s",
         f"{json_s / N_EVENTS * 1e6:.1f} us/event")
    line("baseline: pydantic_core.from_json of the same entries only", f"{rust_s:.3f} s",
         f"{rust_s / N_EVENTS * 1e6:.1f} us/event")
    floor = median(raw_s) + rust_s
    line("full replay: read + decode + fold (median of 3)", f"{median(full_s):.3f} s",
         f"{median(full_s) / floor:.1f}x XRANGE + from_json, {median(full_s) / json_s:.1f}x "
         f"json.loads alone; goal {'met' if median(full_s) < 1 else 'MISSED'}")
    line("  fold alone", f"{fold_s:.3f} s", f"{fold_s / N_EVENTS * 1e6:.1f} us/event")
    line("load from snapshot + 1,000-event tail (the CLI's path)", f"{median(snap_s):.3f} s",
         f"{median(full_s) / median(snap_s):.0f}x faster than the full replay")
    line("state after replay: VPCs / commands still pending", f"{len(state.vpcs)} / {len(state.commands)}",
         "a finished command leaves the state (its record is in the log)")
    await r.aclose()


async def submit_bench(url: str, total: int = 1000) -> None:
    print(f"\nsubmit throughput ({total} create-vpc commands: decide + optimistic append + enqueue)")
    r = await connect(url)
    await r.flushall()
    store = EventStore(r)
    t0 = time.perf_counter()
    for _ in range(total):  # baseline: a bare XADD per command, no decision, no check
        await r.xadd("bench:raw", {"e": b"x" * 400})
    base = total / (time.perf_counter() - t0)
    line("baseline: one bare XADD per command, 1 client", f"{base:,.0f} /s")

    orch = Orchestrator(r, store, JobQueue(r), "bench@host")
    t0 = time.perf_counter()
    for i in range(total):
        await orch.submit(parse_command({"kind": "create-vpc", "name": f"a{i}", "cidr": "10.0.0.0/16"}))
    one = total / (time.perf_counter() - t0)
    line("vpcq submit, 1 client", f"{one:,.0f} /s", f"{one / base:.2f}x the bare XADD")

    async def client(k: int, n: int) -> None:
        rc = await connect(url)
        o = Orchestrator(rc, EventStore(rc), JobQueue(rc), f"bench{k}@host")
        for i in range(n):
            await o.submit(parse_command({"kind": "create-vpc", "name": f"b{k}-{i}",
                                          "cidr": "10.0.0.0/16"}))
        await rc.aclose()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k, total // 8) for k in range(8)))
    eight = total / (time.perf_counter() - t0)
    line("vpcq submit, 8 concurrent clients", f"{eight:,.0f} /s",
         f"{eight / one:.2f}x one client (every append checks the global version)")
    n_vpcs = len((await StateLoader(r, store).load()).vpcs)
    assert n_vpcs == 2 * total, n_vpcs
    await r.aclose()


def startup_bench() -> None:
    print("\nCLI start-up (goal: `vpcq --help` < 0.2 s)")

    def timed(argv: list[str], runs: int = 10) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
        return median(times)

    base = timed([sys.executable, "-c", "pass"])
    help_s = timed([sys.executable, "-m", "vpcq.cli.main", "--help"])
    line("baseline: python -c pass", f"{base * 1000:.0f} ms")
    line("vpcq --help", f"{help_s * 1000:.0f} ms",
         f"{help_s / base:.1f}x bare python; goal {'met' if help_s < 0.2 else 'MISSED'}")
    code = "import sys; import vpcq.cli.main; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    line("pyroute2 imported by the CLI", out.strip())


def main() -> None:
    print(f"bench_log on {platform()}\n")
    with embedded_redis() as (_home, url):
        asyncio.run(replay_bench(url))
        asyncio.run(submit_bench(url))
    startup_bench()


def platform() -> str:
    import os
    import platform as p

    return f"{p.node()}, {os.cpu_count()} cores, Python {p.python_version()}, kernel {p.release()}"


if __name__ == "__main__":
    main()
