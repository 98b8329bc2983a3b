"""Handlers for each sub-command: turn arguments into a command, submit, wait, print."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Set
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from vpcq import config
from vpcq.cli import files, render
from vpcq.cli.parser import MUTATIONS, Parser, UsageError, command_dict, parse_words, seconds
from vpcq.errors import ConfigError, DomainError
from vpcq.events.blocking import BlockingRedis, ConnectionLost, ReplyError, drive, unreachable
from vpcq.events.jobs import JobQueue
from vpcq.events.observed import Observed
from vpcq.events.schema import ChangeApplied, ChangeFailed, Rejected
from vpcq.events.store import EventStore, rejected_seen
from vpcq.events.types import is_actor, show
from vpcq.orchestrator.evolve import command_record
from vpcq.orchestrator.loader import StateLoader
from vpcq.orchestrator.state import is_deletion

# What only some commands need is imported by them: `vpcq list` loads no command models, no
# decide, no asyncio (a read is over in a few milliseconds; imports would take the rest).
if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from vpcq.cli import embedded
    from vpcq.events.commands import Command
    from vpcq.orchestrator.service import Submitted


def actor() -> str:
    """Who the log says did it: $LOGNAME (or the others getpass reads) @ the host name. A
    name holding a space or a control character would forge words or lines in `vpcq log`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    who = f"{user}@{socket.gethostname()}"
    if not is_actor(who):
        raise DomainError("actor", f"{show(who)} (from $LOGNAME, $USER or the host name) holds "
                                   "a space or a control character")
    return who


@asynccontextmanager
async def _redis() -> AsyncIterator[BlockingRedis]:
    redis = BlockingRedis.connect(config.redis_url())
    try:
        yield redis
    finally:
        await redis.aclose()


def run(ns: argparse.Namespace) -> int:
    """Run a parsed command line; Redis going away or stalling on the way is one line.

    `up` and `down` (they start and watch processes) and the console's `ui` and `graph` (an
    ASGI server, and the console's reader) run on asyncio; every other command makes a few
    requests in a row, on the blocking client, without loading asyncio.
    """
    p = config.paths()
    config.check_home(p)
    if ns.cmd in ASYNC_COMMANDS:
        return _instance(ns, p)
    try:
        return drive(_dispatch(ns))
    except (ConnectionLost, ReplyError) as e:
        raise unreachable(config.redis_url(p), e) from e
    finally:
        if ns.cmd not in ("log", "fsck"):  # which show them where they stand
            for r in rejected_seen():
                print(f"vpcq: warning: {r.line()}; never applied (`vpcq fsck` lists them)",
                      file=sys.stderr)


async def _dispatch(ns: argparse.Namespace) -> int:
    if ns.cmd in MUTATIONS:
        return await _submit(ns, [_command_from(command_dict(ns))])
    handler = {
        "submit": _submit_cmd,
        "list": _list,
        "log": _log,
        "status": _status,
        "replay": _replay,
        "fsck": _fsck,
    }[ns.cmd]
    return await handler(ns)


# ---- building commands -------------------------------------------------------------------


def _command_from(d: dict[str, Any]) -> Command:
    from vpcq.events.commands import parse_command, parse_firewall

    if d["kind"] == "apply-firewall":
        # the rules of a file, or of a JSON batch item, pass the same checks
        if "file" in d:
            path = d.pop("file")
            d["firewall"], d["file_subnet"] = parse_firewall(_json(path, files.read_text(path)))
        elif isinstance(d.get("firewall"), dict):
            d["firewall"], subnet = parse_firewall(d["firewall"])
            d.setdefault("file_subnet", subnet)
    return parse_command(d)


def _json(path: str, text: str) -> Any:
    """A file's JSON; deep nesting is one line too, not a RecursionError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DomainError("file", f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise DomainError("file", f"{path} is JSON nested too deep") from None


def _batch(text: str) -> tuple[list[Command], list[str]]:
    """A batch file, and where each command is in it (for errors): one command per line, `#`
    comments and blank lines allowed; or a JSON list (see `_json_batch`)."""
    if text.lstrip().startswith("["):
        return _json_batch(text)
    out: list[Command] = []
    places: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        places.append(f"line {n}")
        out.append(_placed(places[-1], _line_command, stripped))
    return out, places


def _json_batch(text: str) -> tuple[list[Command], list[str]]:
    """A JSON list whose items are command lines (`"create-vpc prod 10.1.0.0/16"`) or objects
    (`{"kind": "create-vpc", "name": "prod", "cidr": "10.1.0.0/16"}`: a kind and its args,
    as `vpcq log --json` shows a CommandAccepted). Items are numbered from 1."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        err = DomainError("file", f"not a JSON list ({e.msg})")
        err.where = f"line {e.lineno}"
        raise err from None
    except RecursionError:
        raise DomainError("file", "a JSON list nested too deep") from None
    if not isinstance(items, list):
        raise DomainError("file", "a batch that starts with '[' must be a JSON list")
    out: list[Command] = []
    for n, item in enumerate(items, 1):
        if isinstance(item, str):
            out.append(_placed(f"item {n}", _line_command, item))
        elif isinstance(item, dict) and isinstance(item.get("kind"), str):
            out.append(_placed(f"item {n}", _command_from, dict(item)))
        else:
            err = DomainError("command", "an item is a command line or an object with a \"kind\"")
            err.where = f"item {n}"
            raise err
    return out, [f"item {n}" for n in range(1, len(out) + 1)]


def _line_command(line: str) -> Command:
    """A command in the CLI's own words: `add-subnet prod web 10.1.1.0/24 --type public`."""
    return _command_from(parse_words(shlex.split(line, comments=True)))


T = TypeVar("T")


def _placed(where: str, make: Callable[[T], Command], arg: T) -> Command:
    """One command of a batch; an error in it says where it is."""
    try:
        return make(arg)
    except (ValueError, UsageError) as e:
        err = DomainError("command", str(e))
        err.where = where
        raise err from None
    except DomainError as e:
        e.where = where
        raise


async def _submit_cmd(ns: argparse.Namespace) -> int:
    if ns.file:
        text = files.read_text(ns.file)
        commands, places = _batch(text)
        if not commands:
            raise DomainError("file", "no commands in the batch")
        return await _submit(ns, commands, places)
    # the wait flags may follow the command's own words: `submit create-vpc a 10.0.0.0/16 --no-wait`
    extra = Parser(add_help=False)
    extra.add_argument("--no-wait", action="store_true")
    extra.add_argument("--timeout", type=seconds)
    extra.add_argument("--json", action="store_true")
    flags, words = extra.parse_known_args(ns.words)
    ns.no_wait = ns.no_wait or flags.no_wait
    ns.json = ns.json or flags.json
    ns.timeout = flags.timeout if flags.timeout is not None else ns.timeout
    return await _submit(ns, [_command_from(parse_words(words))])


# ---- submit and wait -------------------------------------------------------------------------


async def _submit(
    ns: argparse.Namespace, commands: list[Command], places: list[str] | None = None
) -> int:
    from vpcq.orchestrator.service import Orchestrator

    async with _redis() as redis:
        store = EventStore(redis, config.KEY_PREFIX)
        queue = JobQueue(redis)
        orch = Orchestrator(redis, store, queue, actor())
        try:
            submitted = await orch.submit_batch(commands)
        except DomainError as e:
            if e.index is not None:
                e.where = places[e.index] if places else f"command {e.index + 1}"
            raise
        if ns.no_wait:
            for s in submitted:
                print(json.dumps(_sub_json(s)) if ns.json else s.command_id)
            return 0
        deleting = {s.command_id for s, c in zip(submitted, commands, strict=True)
                    if is_deletion(c.kind)}
        outcomes = await _wait(store, queue, submitted, ns.timeout, progress=len(submitted) > 1,
                               deleting=deleting)
        ns.deleting = deleting
    return _report(ns, submitted, outcomes)


def _sub_json(s: Submitted) -> dict[str, Any]:
    return {"command_id": s.command_id, "seq": s.first_seq, "vpcs": list(s.vpcs)}


# How long a command may wait before the CLI checks that its hosts have a worker at all: a
# worker started a moment ago (`vpcq up; vpcq create-vpc ...`) listens from its first poll.
NO_WORKER_GRACE = 2.0


async def _wait(
    store: EventStore, queue: JobQueue, submitted: list[Submitted], timeout: float,
    progress: bool, deleting: Set[str] = frozenset(),
) -> dict[str, ChangeApplied | ChangeFailed]:
    """Follow the log until every command has its outcome or `timeout` passed; on the way,
    say at once when no worker of a command's host is up, and how a deletion that has to be
    tried again stands (what is left, why)."""
    want = {s.command_id for s in submitted}
    outcomes: dict[str, ChangeApplied | ChangeFailed] = {}
    start = time.monotonic()
    tty = progress and sys.stderr.isatty()
    lead = "\n" if tty else ""  # off the progress bar's line
    observed = Observed(store.redis)
    said: dict[str, str] = {}
    hint_at = start + NO_WORKER_GRACE
    next_look = start + 1.0  # at the deletions' progress
    arrivals = store.arrivals(submitted[0].first_seq, block_ms=200)
    try:
        async for batch in arrivals:
            for env in batch:
                ev = env.event
                if isinstance(ev, ChangeApplied | ChangeFailed) and ev.command_id in want:
                    outcomes.setdefault(ev.command_id, ev)
                    if tty:
                        _progress(outcomes, len(want), time.monotonic() - start)
            now = time.monotonic()
            if len(outcomes) == len(want) or now - start >= timeout:
                break
            if now >= hint_at:
                hint_at = float("inf")
                hosts = [s.host for s in submitted if s.command_id not in outcomes and s.host]
                for host, n in (await queue.listening(hosts)).items():
                    if n == 0:
                        start_one = ("vpcq up" if host == config.host_id()
                                     else f"VPCQ_HOST={host} vpcq worker")
                        print(f"{lead}vpcq: no worker of host {host!r} is up (start one: "
                              f"`{start_one}`); waiting up to {timeout:.0f} s", file=sys.stderr)
            if deleting and now >= next_look:
                next_look = now + 1.0
                for cid, p in (await observed.deleting(deleting - outcomes.keys())).items():
                    line = p.describe()
                    if said.get(cid) != line:
                        said[cid] = line
                        print(f"{lead}vpcq: {cid} {line}; trying again", file=sys.stderr)
    finally:
        await arrivals.aclose()
    if tty:
        print(file=sys.stderr)
    return outcomes


def _progress(outcomes: dict[str, Any], total: int, elapsed: float) -> None:
    failed = sum(isinstance(o, ChangeFailed) for o in outcomes.values())
    done = len(outcomes)
    width = 30
    filled = int(width * done / total)
    rate = done / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done - failed} applied, {failed} failed, "
        f"{total} total, {rate:.1f}/s"
    )
    sys.stderr.flush()


def _report(
    ns: argparse.Namespace, submitted: list[Submitted], outcomes: dict[str, Any]
) -> int:
    failed = [s for s in submitted if isinstance(outcomes.get(s.command_id), ChangeFailed)]
    missing = [s for s in submitted if s.command_id not in outcomes]
    if ns.json:
        for s in submitted:
            o = outcomes.get(s.command_id)
            status = "pending" if o is None else "applied" if isinstance(o, ChangeApplied) else "failed"
            reason = o.reason if isinstance(o, ChangeFailed) else None
            print(json.dumps({**_sub_json(s), "status": status, "reason": reason}))
    elif len(submitted) == 1 and not failed and not missing:
        print(f"applied {submitted[0].command_id}")
    elif not failed and not missing:
        print(f"applied {len(submitted)} commands")
    for s in failed:
        o = outcomes[s.command_id]
        print(f"vpcq: failed {s.command_id}: {o.reason}", file=sys.stderr)
    if missing:
        deleting = [s for s in missing if s.command_id in getattr(ns, "deleting", ())]
        why = ("a deletion is tried again until it is done" if deleting
               else "is a worker running? `vpcq up`")
        print(
            f"vpcq: {len(missing)} command(s) not applied after {ns.timeout:.0f} s "
            f"({why}); `vpcq status {(deleting or missing)[0].command_id}` tells later",
            file=sys.stderr,
        )
        return 4
    return 1 if failed else 0


# ---- reading -------------------------------------------------------------------------------


async def _list(ns: argparse.Namespace) -> int:
    async with _redis() as redis:
        state = await StateLoader(redis, EventStore(redis, config.KEY_PREFIX)).load()
        # this host's, and every host a VPC is on: how many of their workers are up
        hosts = sorted({config.host_id(), *(v.host for v in state.vpcs.values())})
        workers = await JobQueue(redis).listening(hosts)
        observed = Observed(redis)
        progress = await observed.deleting(
            c for c in state.pending if is_deletion(state.commands[c].kind))
        health = await observed.health(v.name for v in state.vpcs.values() if v.balancers)
    if ns.json:
        print(json.dumps({**render.state_json(state, progress, health), "workers": workers}, indent=2))
    else:
        print(render.state_text(state, progress, health))
        print("workers up: " + ", ".join(f"{n} on {h}" for h, n in workers.items()))
    return 0


async def _replay(ns: argparse.Namespace) -> int:
    async with _redis() as redis:
        loader = StateLoader(redis, EventStore(redis, config.KEY_PREFIX))
        state = await (loader.at(ns.to_seq) if ns.to_seq is not None else loader.load())
    print(json.dumps(render.state_json(state), indent=2) if ns.json else render.state_text(state))
    return 0


async def _log(ns: argparse.Namespace) -> int:
    async with _redis() as redis:
        store = EventStore(redis, config.KEY_PREFIX)
        async for env in store.entries(after=ns.since):
            if isinstance(env, Rejected):  # what it says is not to be trusted: not filtered
                print(render.rejected_json(env) if ns.json else render.rejected_line(env))
                continue
            if ns.vpc and ns.vpc not in env.vpcs:
                continue
            print(render.log_json(env) if ns.json else render.log_line(env))
    return 0


async def _fsck(ns: argparse.Namespace) -> int:
    """Every entry readers quarantine, and whether the version key agrees with the stream;
    exit 1 if anything is wrong. Changes nothing."""
    async with _redis() as redis:
        store = EventStore(redis, config.KEY_PREFIX)
        rejected = await store.rejected()
        problems = await store.check_version()
    for r in rejected:
        print(render.rejected_json(r) if ns.json else r.line())
    for line in problems:
        print(json.dumps({"problem": line}) if ns.json else line)
    if not ns.json:
        print(f"{len(rejected)} rejected entr{'y' if len(rejected) == 1 else 'ies'}, "
              f"{len(problems)} other problem(s)" if rejected or problems else "the log is sound")
    return 1 if rejected or problems else 0


async def _status(ns: argparse.Namespace) -> int:
    async with _redis() as redis:
        store = EventStore(redis, config.KEY_PREFIX)
        accepted, outcome = await store.command(ns.command_id)
        rec = command_record(accepted, outcome) if accepted is not None else None
        if rec is None:
            raise DomainError("command_id", f"no command {ns.command_id!r} in the log")
        deleting = rec.status == "pending" and is_deletion(rec.kind)
        progress = (await Observed(redis).deleting([rec.id])).get(rec.id) if deleting else None
    if ns.json:
        print(json.dumps({"command_id": rec.id, "kind": rec.kind, "status": rec.status,
                          "reason": rec.reason, "seq": rec.seq, "vpcs": list(rec.vpcs),
                          "host": rec.host or None,
                          "actor": rec.actor, "time": rec.time,
                          "deleting": render.progress_json(progress) if deleting else None}))
    else:
        tail = f": {rec.reason}" if rec.reason else ""
        if deleting:
            tail = f": {progress.describe()}" if progress is not None else ": deleting"
        print(f"{rec.id} {rec.kind} {rec.status}{tail}")
    return {"applied": 0, "failed": 1, "pending": 4}[rec.status]


# ---- the embedded instance --------------------------------------------------------------------


ASYNC_COMMANDS = ("up", "down", "ui", "graph")


def _instance(ns: argparse.Namespace, p: config.Paths) -> int:
    """`vpcq up`, `down`, `ui` and `graph`, on asyncio and redis-py (loaded here only)."""
    import asyncio

    from redis.exceptions import RedisError

    from vpcq import logs
    from vpcq.cli import console

    handlers = {"up": _up, "down": _down, "ui": console.ui, "graph": console.graph}
    logs.configure(p.logs / "vpcq.log" if p.home.exists() else None, verbose=ns.verbose)
    try:
        return asyncio.run(handlers[ns.cmd](ns))
    except RedisError as e:
        raise unreachable(config.redis_url(p), e) from e


async def _up(ns: argparse.Namespace) -> int:
    from vpcq.cli import embedded

    p = config.paths()
    files = embedded.Files(p)
    external = "VPCQ_REDIS_URL" in os.environ
    last_up = embedded.Wanted.load(files).since
    t0 = time.time()
    sup = embedded.supervise(p, embedded.Wanted(ns.workers, redis=not external, since=t0))
    if sup is not None:
        print(f"started the supervisor (pid {sup.pid})")
    async with _reached(external) as redis:
        await _workers_up(p, files, JobQueue(redis), ns.workers, t0)
    status = embedded.read_status(files)
    for name, st in sorted(status.items()):
        if st.get("started_at", 0) > last_up and st.get("running"):
            why = str(st.get("why", ""))
            verb = "started" if why == "first start" else "took over" if why.startswith("adopted") \
                else "restarted"
            print(f"{verb} {name} (pid {st.get('pid')}): {why}")
    what = ([] if external else ["redis-server"]) + [f"{ns.workers} worker(s)"]
    print(f"up: {' and '.join(what)} running")
    embedded.Wanted(ns.workers, redis=not external, since=time.time()).save(files)  # told
    return 0


REDIS_WAIT = 15.0  # how long `vpcq up` waits for the embedded Redis to answer
UP_WAIT = 30.0  # how long `vpcq up` waits for the workers to take jobs


@asynccontextmanager
async def _reached(external: bool) -> AsyncIterator[ArqRedis]:
    """A connection to Redis, once it answers PING (the embedded one may be starting)."""
    import asyncio

    from vpcq.events.connection import connect

    deadline = time.monotonic() + (0 if external else REDIS_WAIT)
    while True:
        try:
            redis = await connect(config.redis_url())
            break
        except ConfigError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)
    try:
        yield redis
    finally:
        await redis.aclose()


async def _workers_up(p: config.Paths, files: embedded.Files, queue: JobQueue, want: int,
                      since: float) -> None:
    """Wait until `want` workers of this host take jobs. A worker that exits while it
    starts is an error naming what it said last."""
    import asyncio

    from vpcq.cli import embedded

    host = config.host_id()
    deadline = time.monotonic() + UP_WAIT
    while (await queue.listening([host]))[host] < want:
        for name, st in embedded.read_status(files).items():
            if name.startswith("worker-") and st.get("gone_started_at", 0) > since:
                out = p.logs / f"{name}.out"
                lines = out.read_text(errors="replace").strip().splitlines() if out.exists() else []
                raise ConfigError(f"{name} exited while starting: {lines[-1] if lines else 'no output'} "
                                  f"(all it said: {out})")
        if time.monotonic() > deadline:
            raise ConfigError(f"the workers did not all take jobs within {UP_WAIT:.0f} s "
                              f"(see {p.logs}/worker-*.out)")
        await asyncio.sleep(0.05)


async def _down(ns: argparse.Namespace) -> int:
    from vpcq.cli import embedded

    stopped = embedded.stop(config.paths())
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0
