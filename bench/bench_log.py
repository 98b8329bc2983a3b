"""The event log: replay of 100k events, submit throughput (1 and 8 clients), CLI start-up.

    sudo ./dev bench     (or: .venv/bin/python bench/bench_log.py)
    .venv/bin/python bench/bench_log.py --replay-only
    .venv/bin/python bench/bench_log.py --before /other/checkout/.venv/bin/python

Goals: replay 100k events to state in < 1 s, and in at most 1.5x the bare XRANGE +
pydantic_core.from_json of the same entries (every entry checked); `vpcq --help` < 0.2 s.
Each figure is printed with a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
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


async def replay_bench(url: str, rounds: int = 5) -> dict[str, float]:
    """Replay from event 1, beside its baseline (the same entries read by XRANGE and parsed
    by pydantic_core.from_json, no validation, no fold), in interleaved rounds: medians."""
    print(f"replay of {N_EVENTS:,} events from Redis to state (goals: < 1 s, and at most 1.5x "
          "XRANGE + from_json)")
    t0 = time.perf_counter()
    log = synthetic_log(N_EVENTS)
    line("building the synthetic log (decide + fold)", f"{time.perf_counter() - t0:.2f} s")
    r = await connect(url)
    await r.flushall()
    store = EventStore(r)
    for i in range(0, len(log), 5000):
        await store.append(log[i : i + 5000], expected_version=None)
    raw_s, rust_s, full_s, ratios = [], [], [], []
    loader = StateLoader(r, store)
    for k in range(rounds + 1):  # round 0 warms up (its from_json pays for fresh memory)
        t0 = time.perf_counter()
        n, start, bodies = 0, "-", []
        with no_gc():  # baseline: reading the raw entries (XRANGE, paged like the store)
            while True:
                page = await r.xrange("vpcq:log", start, "+", count=PAGE)
                n += len(page)
                bodies += [fields[b"c"] for _, fields in page]
                if len(page) < PAGE:
                    break
                start = "(" + page[-1][0].decode()
        raw_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with no_gc():  # baseline: the fastest parser at hand (Rust), no validation, no fold
            parsed = [from_json(b) for b in bodies]
        rust_s.append(time.perf_counter() - t0)
        assert sum(len(p["e"]) for p in parsed) == N_EVENTS
        del parsed, bodies  # freed outside any timing
        t0 = time.perf_counter()
        state = await loader.at(N_EVENTS)  # the real path: read, check, decode, fold from event 1
        full_s.append(time.perf_counter() - t0)
        ratios.append(full_s[-1] / (raw_s[-1] + rust_s[-1]))
        if k == 0:
            raw_s, rust_s, full_s, ratios = [], [], [], []
        if k < rounds:
            del state  # freed outside the next round's timing
    assert state.seq == N_EVENTS, state.seq
    commits = [c async for page in store.pages() for c in page]
    t0 = time.perf_counter()
    with no_gc():
        again = fold_commits(INITIAL, commits)
    fold_s = time.perf_counter() - t0
    assert again == state == fold(INITIAL, log)
    await r.set(SNAPSHOT_KEY, dump_state(fold(INITIAL, log[: N_EVENTS - 1000])))
    snap_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        cached = await StateLoader(r, store).load()  # snapshot + the last 1,000 events
        snap_s.append(time.perf_counter() - t0)
    assert cached == state
    ratio = median(ratios)
    line("log entries (one per command's commit, one per outcome)", f"{n:,}",
         f"{N_EVENTS / n:.2f} events/entry")
    line("baseline: XRANGE of the raw entries only", f"{median(raw_s):.3f} s")
    line("baseline: pydantic_core.from_json of them only", f"{median(rust_s):.3f} s",
         f"{median(rust_s) / N_EVENTS * 1e6:.1f} us/event")
    line("full replay: read + check + decode + fold", f"{median(full_s):.3f} s",
         f"{ratio:.2f}x XRANGE + from_json (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); "
         f"< 1 s {'met' if median(full_s) < 1 else 'MISSED'}, "
         f"1.5x {'met' if ratio <= 1.5 else 'MISSED'}")
    line("  fold alone", f"{fold_s:.3f} s", f"{fold_s / N_EVENTS * 1e6:.1f} us/event")
    line("load from snapshot + 1,000-event tail (the CLI's path)", f"{median(snap_s):.3f} s",
         f"{median(full_s) / median(snap_s):.0f}x faster than the full replay")
    line("state after replay: VPCs / commands still pending", f"{len(state.vpcs)} / {len(state.commands)}",
         "a finished command leaves the state (its record is in the log)")
    await r.aclose()
    return {"replay": median(full_s), "xrange": median(raw_s), "from_json": median(rust_s),
            "ratio": ratio, "fold": fold_s}


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay-only", action="store_true", help="only the replay benchmark")
    ap.add_argument("--rounds", type=int, default=5, help="replay rounds (default 5)")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also run the replay benchmark with another checkout's Python (its venv's "
                         "bin/python), alternating with this one, and print both ratios")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # for --before
    args = ap.parse_args()
    print(f"bench_log on {platform()}\n")
    if args.before:
        before_vs_now(args.before, args.rounds)
        return
    with embedded_redis() as (_home, url):
        figures = asyncio.run(replay_bench(url, args.rounds))
        if not args.replay_only:
            asyncio.run(submit_bench(url))
    if args.json:
        print("JSON " + json.dumps(figures))
    if not args.replay_only:
        startup_bench()


def before_vs_now(before: str, rounds: int) -> None:
    """The replay benchmark of this checkout and of another, one after the other, twice: the
    same file run by each one's Python (from /, so each imports its own vpcq)."""
    me = str(Path(__file__).resolve())
    runs: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
    for _ in range(2):
        for who, python in (("before", before), ("now", sys.executable)):
            out = subprocess.run([python, me, "--replay-only", "--json", "--rounds", str(rounds)],
                                 cwd="/", capture_output=True, text=True, check=True).stdout
            print(f"[{who}: {python}]")
            print("\n".join(ln for ln in out.splitlines() if not ln.startswith(("JSON ", "bench_log"))))
            runs[who].append(json.loads(out.rsplit("JSON ", 1)[1]))
    for who, figures in runs.items():
        line(f"{who}: replay / XRANGE + from_json",
             " ".join(f"{f['ratio']:.2f}x" for f in figures),
             "  ".join(f"{f['replay']:.3f} s vs {f['xrange'] + f['from_json']:.3f} s" for f in figures))


def platform() -> str:
    import os
    import platform as p

    return f"{p.node()}, {os.cpu_count()} cores, Python {p.python_version()}, kernel {p.release()}"


if __name__ == "__main__":
    main()
