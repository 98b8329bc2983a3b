"""`vpcq ui`: the console, a Starlette app served by uvicorn. Read-only.

It listens on loopback unless told otherwise, and refuses every request (the page, its
scripts, the API, the event stream) that does not carry the token it prints at start, as
Jupyter does: in the URL once (the answer sets a cookie and takes the token out of the
address bar), then in that cookie, or as `Authorization: Bearer <token>`. On loopback it
also refuses a Host header that is not a loopback name (a page of another site that a DNS
rebinding pointed here).

One task follows the log (XREAD BLOCK, woken by each append) and folds it; another turns
the scene into a picture whenever something changed (and once a second for the observed
facts) and sends what differs to every open event stream. A change reaches the page in
about the time a picture takes to build.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

import uvicorn
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request, cookie_parser
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vpcq import config
from vpcq.console import export
from vpcq.console.archive import Archive
from vpcq.console.layout import draw
from vpcq.console.model import NO_FACTS, Facts, Graph, changes, topology
from vpcq.console.scene import Scene
from vpcq.console.timeline import describe
from vpcq.errors import ConfigError, DomainError
from vpcq.events.blocking import unreachable
from vpcq.events.connection import connect

STATIC = Path(__file__).parent / "static"
DEFAULT_LISTEN = "127.0.0.1:8470"
FACTS_EVERY = 1.0  # seconds between two reads of the observed facts
BURST = 0.05  # a picture at most this often: a batch of commands is drawn once, not per event
KEEPALIVE = 15.0  # seconds of silence before an event stream sends a comment
STORY_MAX = 400  # events of one command's story sent to the page
QUEUE_MAX = 64  # messages a slow page may be behind before its stream is closed (it reconnects)


# ---- the published picture ------------------------------------------------------------------


class Hub:
    """The picture last drawn, and the event streams that get what changes in it."""

    def __init__(self) -> None:
        self.seq = 0
        self.time = ""
        self.graph: Graph | None = None
        self.elements: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {"log": "ok"}
        self.streams: set[asyncio.Queue[str | None]] = set()
        self.dirty = asyncio.Event()

    def publish(self, scene: Scene, facts: Facts, entries: list[dict[str, Any]]) -> None:
        graph = topology(scene, facts)
        new = {e["data"]["id"]: e for e in export.elements(draw(graph))}
        old = self.elements
        add = [e for k, e in new.items() if k not in old]
        update = [e for k, e in new.items() if k in old and old[k] != e]
        remove = [k for k in old if k not in new]
        self.graph, self.elements, self.seq, self.time = graph, new, scene.seq, scene.time
        if add or update or remove or entries:
            self.send("update", {"seq": scene.seq, "time": scene.time, "add": add, "update": update,
                                 "remove": remove, "entries": entries})

    def hello(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "elements": list(self.elements.values()),
                "status": self.status}

    def set_status(self, key: str, text: str) -> None:
        if self.status.get(key) != text:
            self.status[key] = text
            self.send("status", self.status)

    def send(self, event: str, data: Mapping[str, Any]) -> None:
        msg = sse(event, data)
        for q in list(self.streams):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:  # too far behind: end its stream; the page reconnects
                self._end(q)

    def subscribe(self) -> asyncio.Queue[str | None]:
        q: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_MAX)
        self.streams.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str | None]) -> None:
        self.streams.discard(q)

    def close(self) -> None:
        for q in list(self.streams):
            self._end(q)

    def _end(self, q: asyncio.Queue[str | None]) -> None:
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
        self.streams.discard(q)


def sse(event: str, data: Mapping[str, Any]) -> str:
    """One server-sent event (JSON has no raw newline, so one data line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def follow(archive: Archive, hub: Hub) -> None:
    """Fold the log as it grows; say so when Redis cannot be read, and keep trying."""
    while True:
        try:
            async for _seq in archive.follow():
                hub.dirty.set()
                hub.set_status("log", "ok")
        except (RedisError, OSError) as e:
            hub.set_status("log", str(unreachable(config.redis_url(), e)))
            await asyncio.sleep(1.0)


async def draw_loop(archive: Archive, hub: Hub) -> None:
    """Draw the picture when the log moved, and every FACTS_EVERY for the observed facts."""
    facts = NO_FACTS
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.dirty.wait(), FACTS_EVERY)
        hub.dirty.clear()
        scene = archive.refresh()
        try:
            facts = await archive.facts(scene)
            hub.set_status("facts", "ok")
        except (RedisError, OSError) as e:
            hub.set_status("facts", f"observed facts unavailable: {e}")
        hub.publish(scene, facts, [e.json() for e in archive.changed()])
        await asyncio.sleep(BURST)


# ---- the token gate ---------------------------------------------------------------------------


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class TokenGate:
    """Refuses a request without the token; a first visit with it in the URL gets a cookie."""

    def __init__(self, app: ASGIApp, token: str, port: int, loopback: bool) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie = f"vpcq-console-{port}"
        names = ("127.0.0.1", "localhost", "[::1]")
        self.hosts = {f"{h}:{port}".encode() for h in names} if loopback else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.hosts is not None and headers.get(b"host", b"") not in self.hosts:
            await _refuse(scope, receive, send, "a Host that is not this machine's loopback")
            return
        query = _query_token(scope)
        if query is not None and self._ok(query):
            # drop the token from the address bar and keep it in a cookie (HttpOnly: no
            # script reads it; SameSite=Strict: no other site's page sends it)
            cookie = (f"{self.cookie}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/")
            await _send(send, 303, b"", [(b"location", scope["path"].encode()),
                                          (b"set-cookie", cookie.encode())])
            return
        given = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(self.cookie)
        auth = headers.get(b"authorization", b"")
        if not (given is not None and self._ok(given)) and not (
            auth.startswith(b"Bearer ") and self._ok(auth[7:].decode("latin-1"))
        ):
            await _refuse(scope, receive, send, "no token")
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, secured)

    def _ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("latin-1", "replace"), self.token)


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _refuse(scope: Scope, receive: Receive, send: Send, why: str) -> None:
    body = (f"vpcq ui refused this request ({why}): open the URL with the token that "
            "`vpcq ui` printed when it started\n").encode()
    await _send(send, 403, body, [(b"content-type", b"text/plain; charset=utf-8")])


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


# ---- the app ------------------------------------------------------------------------------------


def create_app(archive: Archive, token: str, port: int, loopback: bool = True,
               started: Callable[[Hub], Coroutine[Any, Any, None]] | None = None) -> TokenGate:
    """The console's ASGI app over an archive that has loaded the log."""
    hub = Hub()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        archive.changed()  # the audit log's first page is read, not streamed
        hub.publish(archive.refresh(), NO_FACTS, [])
        tasks = [asyncio.create_task(follow(archive, hub)), asyncio.create_task(draw_loop(archive, hub))]
        if started is not None:
            tasks.append(asyncio.create_task(started(hub)))
        try:
            yield
        finally:
            hub.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def graph(request: Request) -> Response:
        seq = _int(request, "seq", None, 0, archive.seq)
        if seq is None or hub.graph is None:
            return JSONResponse({**hub.hello(), "now": hub.seq, "changes": []})
        then = topology(await archive.at(seq), NO_FACTS)
        diff = changes(then, hub.graph)
        els = export.elements(draw(then))
        _mark(els, {c.id: c.op for c in diff if c.op != "added"})
        return JSONResponse({"seq": then.seq, "time": then.time, "now": hub.seq, "elements": els,
                             "changes": [c._asdict() for c in diff], "status": hub.status})

    async def timeline(request: Request) -> Response:
        before = _int(request, "before", None, 0, None)
        limit = _int(request, "limit", None, 1, 500) or 100
        vpc = request.query_params.get("vpc") or None
        tl = archive.timeline
        page = tl.page(before, limit + 1, vpc)
        return JSONResponse({"entries": [e.json() for e in page[:limit]], "more": len(page) > limit,
                             "vpcs": tl.vpcs(), "now": archive.seq})

    async def command(request: Request) -> Response:
        entry = archive.timeline.by_id.get(request.path_params["id"])
        if entry is None:
            return JSONResponse({"error": "no such command in the log"}, status_code=404)
        events: list[dict[str, Any]] = []
        for lo, hi in entry.runs:
            for env in await archive.store.read(after=lo - 1, upto=min(hi, lo + STORY_MAX)):
                if env.command_id == entry.command_id and len(events) < STORY_MAX:
                    events.append({"seq": env.seq, "type": env.type, "time": env.time, "actor": env.actor,
                                   "summary": describe(env.event),
                                   "data": env.event.model_dump(mode="json")})
        shown = sum(hi - lo + 1 for lo, hi in entry.runs)
        cancelled = [e.json() for e in archive.timeline.entries if e.caused_by == entry.command_id]
        return JSONResponse({"entry": entry.json(), "events": events, "more": max(shown - len(events), 0),
                             "cancelled": cancelled})

    async def events(request: Request) -> Response:
        q = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n" + sse("hello", hub.hello())
                while True:
                    try:
                        msg = await asyncio.wait_for(q.get(), KEEPALIVE)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if msg is None:
                        return
                    yield msg
            finally:
                hub.unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def export_(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in export.FORMATS:
            return JSONResponse({"error": f"format is one of {', '.join(export.FORMATS)}"}, status_code=404)
        seq = _int(request, "seq", None, 0, archive.seq)
        if seq is None and hub.graph is not None:
            g = hub.graph
        else:
            g = topology(await archive.at(seq if seq is not None else archive.seq), NO_FACTS)
        text = export.render(fmt, draw(g))
        ext, media = {"svg": ("svg", "image/svg+xml"), "dot": ("dot", "text/vnd.graphviz"),
                      "mermaid": ("mmd", "text/plain")}[fmt]
        return PlainTextResponse(text, media_type=media, headers={
            "content-disposition": f'attachment; filename="vpcq-seq-{g.seq}.{ext}"'})

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/graph", graph),
        Route("/api/timeline", timeline),
        Route("/api/command/{id}", command),
        Route("/api/events", events),
        Route("/api/export/{fmt}", export_),
        Mount("/static", StaticFiles(directory=STATIC)),
    ], lifespan=lifespan, exception_handlers={BadRequest: _bad_request})  # fmt: skip
    return TokenGate(app, token, port, loopback)


def _mark(els: list[dict[str, Any]], marks: Mapping[str, str]) -> None:
    """Mark what is gone by now ("removed") or different now ("changed") on a past picture:
    an object named in `marks`, everything of a VPC that is gone, a text as its owner."""
    gone = {k[4:] for k, op in marks.items() if k.startswith("vpc:") and op == "removed"}
    by_id: dict[str, str] = {}
    for e in els:
        d = e["data"]
        if d["kind"] == "text":
            continue
        mark = marks.get(d["id"])
        if mark is None and (d.get("vpc") in gone or any(v in gone for v in d.get("vpcs", ()))):
            mark = "removed"
        if mark is not None:
            d["mark"] = by_id[d["id"]] = mark
    for e in els:
        d = e["data"]
        if d["kind"] == "text" and d["owner"] in by_id:
            d["mark"] = by_id[d["owner"]]


class BadRequest(Exception):
    pass


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


def _int(request: Request, name: str, default: int | None, lo: int, hi: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not a whole number") from None
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{name}: {value} is outside {lo}..{hi if hi is not None else ''}")
    return value


# ---- serving ------------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IP address or `localhost`; IPv6 in brackets) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DomainError("listen", f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise DomainError("listen", f"{host!r} is not an IP address (or localhost)") from None
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog from now on, until uvicorn serves
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(False)
    return sock


async def serve(listen: str = DEFAULT_LISTEN, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Load the log, print the URL with its token, serve until SIGINT or SIGTERM."""
    host, port = parse_listen(listen)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    loopback = is_loopback(host)
    redis = await connect(config.redis_url())
    try:
        archive = Archive(redis)
        scene = await archive.load()
        token = secrets.token_urlsafe(24)
        server = _Server(uvicorn.Config(
            create_app(archive, token, port, loopback, started=lambda hub: _until_exit(server, hub)),
            log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2,
        ))  # fmt: skip
        shown = host if not ipaddress.ip_address(host).is_unspecified else "127.0.0.1"
        shown = f"[{shown}]" if ":" in shown else shown
        subnets = sum(len(v.subnets) for v in scene.state.vpcs.values())
        print(f"vpcq ui: the log is at seq {scene.seq} ({len(scene.state.vpcs)} VPCs, {subnets} subnets); "
              f"serving the console, read-only, at\n    http://{shown}:{port}/?token={token}\n"
              "Ctrl-C stops it.", file=out, flush=True)
        if not loopback:
            print(f"vpcq ui: listening on {host}:{port}, beyond this machine, over plain HTTP: anyone "
                  "who can reach it and has the token reads the whole log", file=err, flush=True)
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await redis.aclose()
    print("vpcq ui: stopped", file=out, flush=True)
    return 0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM ask the server to stop, as in uvicorn's own; but the signal is
        not raised again once it has stopped (the process would then die of it after a clean
        shutdown): `vpcq ui` says it stopped and exits 0."""
        before = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


async def _until_exit(server: uvicorn.Server, hub: Hub) -> None:
    """End the event streams as soon as the server is asked to stop (they would otherwise
    hold the graceful shutdown for its whole timeout)."""
    while not server.should_exit:
        await asyncio.sleep(0.1)
    hub.close()
