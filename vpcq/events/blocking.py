"""A blocking Redis client for the CLI: the commands the log, the queue and the observed
state ask for, on one socket, with hiredis (Redis's own reply parser) reading the replies.

A CLI command makes a handful of requests, each well under a millisecond on a local Redis;
importing redis-py (which loads its asyncio, cluster and sentinel clients) and asyncio costs
the process several times that before the first one is sent. The store, the orchestrator
and the queue are written against redis.asyncio's methods; this client has the same methods
and reply shapes, as coroutines that never suspend, so `drive` runs a whole command to its
end without an event loop. The workers keep redis.asyncio.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from vpcq.config import describe_url
from vpcq.errors import ConfigError

T = TypeVar("T")

# Every request has a bounded wait: a paused or lost Redis is an error within this many
# seconds (exit 3 in the CLI), never a hang. Blocking reads (XREAD BLOCK) ask for less.
TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


class Requests(Protocol):
    """What vpcq asks of a Redis client; redis.asyncio.Redis and BlockingRedis both answer it
    (each method returns an awaitable)."""

    def get(self, name: str) -> Any: ...
    def hmget(self, name: str, keys: list[str]) -> Any: ...
    def hset(self, name: str, *, mapping: dict[str, str]) -> Any: ...
    def hdel(self, name: str, *keys: str) -> Any: ...
    def xrange(self, name: str, min: str = ..., max: str = ..., count: int | None = ...) -> Any: ...
    def xrevrange(self, name: str, max: str = ..., min: str = ..., count: int | None = ...) -> Any: ...
    def xread(self, streams: Any, count: int | None = ..., block: int | None = ...) -> Any: ...
    def pubsub_numsub(self, *args: str) -> Any: ...
    def pipeline(self, transaction: bool = ...) -> Any: ...
    def register_script(self, script: str) -> Any: ...
    def execute_command(self, *args: Any) -> Any: ...


class ReplyError(Exception):
    """Redis answered a request with an error (its text, e.g. `NOAUTH ...`, `VERSION_CONFLICT 7`)."""


class ConnectionLost(Exception):
    """The connection to Redis failed or timed out during a request (the OSError is its cause)."""


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that awaits only this client's methods (which never suspend) to its
    end, without an event loop; an await that would wait on one is a bug, said at once."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a coroutine run without an event loop waited for one")


async def pause(redis: object, seconds: float) -> None:
    """Sleep in the way `redis`'s client does: the thread for this one, the event loop else."""
    if isinstance(redis, BlockingRedis):
        time.sleep(seconds)
    else:
        import asyncio  # loaded already wherever an asyncio client runs

        await asyncio.sleep(seconds)


def _encode(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _entries(reply: list[Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XRANGE's entries as redis-py gives them: (id, {field: value})."""
    return [(eid, dict(zip(flat[::2], flat[1::2], strict=True))) for eid, flat in reply]


class Script:
    """A Lua script, sent whole with each call (EVAL): a CLI process calls it once or twice,
    and Redis compiles a script it has seen before only once."""

    def __init__(self, client: BlockingRedis, text: str) -> None:
        self.client = client
        self.text = text

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        return self.client.call("EVAL", self.text, len(keys), *keys, *args)


class Pipeline:
    """Requests sent together and answered together (no MULTI, as `transaction=False`)."""

    def __init__(self, client: BlockingRedis) -> None:
        self.client = client
        self.requests: list[tuple[tuple[Any, ...], Any]] = []

    def _add(self, args: tuple[Any, ...], convert: Any = None) -> Pipeline:
        self.requests.append((args, convert))
        return self

    def get(self, name: str) -> Pipeline:
        return self._add(("GET", name))

    def set(self, name: str, value: bytes | str) -> Pipeline:
        return self._add(("SET", name, value), lambda r: r == b"OK")

    def delete(self, *names: str) -> Pipeline:
        return self._add(("DEL", *names))

    def hget(self, name: str, key: str) -> Pipeline:
        return self._add(("HGET", name, key))

    def xrange(self, name: str, min: str = "-", max: str = "+", count: int | None = None) -> Pipeline:
        return self._add(("XRANGE", name, min, max, *_count(count)), _entries)

    def xrevrange(self, name: str, max: str = "+", min: str = "-", count: int | None = None) -> Pipeline:
        return self._add(("XREVRANGE", name, max, min, *_count(count)), _entries)

    def execute_command(self, *args: Any) -> Pipeline:
        return self._add(args)

    async def execute(self) -> list[Any]:
        requests, self.requests = self.requests, []
        replies = self.client.exchange([args for args, _ in requests])
        return replies_of(replies, [convert for _, convert in requests])


def replies_of(replies: list[Any], converts: list[Any] | None) -> list[Any]:
    """Replies in order, the first error raised (as redis-py's pipelines do)."""
    for r in replies:
        if isinstance(r, ReplyError):
            raise r
    if converts is None:
        return replies
    return [r if c is None else c(r) for r, c in zip(replies, converts, strict=True)]


def _count(count: int | None) -> tuple[Any, ...]:
    return () if count is None else ("COUNT", count)


class BlockingRedis:
    """The methods of redis.asyncio.Redis that vpcq's CLI uses, on a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = hiredis.Reader(replyError=ReplyError)

    @classmethod
    def connect(cls, url: str) -> BlockingRedis:
        """A client on `url` (`unix://PATH?password=P&db=N` or `redis://[[USER]:PASS@]HOST[:PORT][/DB]`)
        that has answered PING; ConfigError if Redis is not there or refuses it."""
        try:
            u = urlsplit(url)
            query = {k: v[-1] for k, v in parse_qs(u.query).items()}
            u.port  # noqa: B018 (a port that is not a number raises here, not mid-connect)
        except ValueError as e:
            raise bad_url(url, e) from None
        try:
            if u.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                address: Any = u.path
            elif u.scheme == "redis":
                sock = socket.socket(socket.AF_INET6 if ":" in (u.hostname or "") else socket.AF_INET)
                address = (u.hostname or "localhost", u.port or 6379)
            else:
                raise ConfigError(f"Redis URL {describe_url(url)}: the scheme must be unix:// or redis://")
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(address)
                sock.settimeout(TIMEOUT)
                client = cls(sock)
                password = unquote(u.password) if u.password else query.get("password")
                user = unquote(u.username) if u.username else query.get("username")
                first: list[tuple[Any, ...]] = []
                if password:
                    first.append(("AUTH", user, password) if user else ("AUTH", password))
                db = (query.get("db") or u.path.lstrip("/")) if u.scheme == "redis" else query.get("db")
                if db and db != "0":
                    first.append(("SELECT", db))
                replies_of(client.exchange([*first, ("PING",)]), None)
            except BaseException:
                sock.close()
                raise
        except (OSError, ReplyError, ConnectionLost) as e:
            raise unreachable(url, e) from e
        return client

    def exchange(self, requests: Iterable[tuple[Any, ...]], timeout: float = TIMEOUT) -> list[Any]:
        """Send requests at once, read their replies in order (an error reply is returned)."""
        batch = list(requests)
        out: list[Any] = []
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(b"".join(_encode(r) for r in batch))
            while len(out) < len(batch):
                reply = self.reader.gets()
                if reply is False:
                    data = self.sock.recv(1 << 20)
                    if not data:
                        raise ConnectionResetError("Redis closed the connection")
                    self.reader.feed(data)
                    continue
                out.append(reply)
        except OSError as e:
            raise ConnectionLost(short(e)) from e
        return out

    def call(self, *args: Any, timeout: float = TIMEOUT) -> Any:
        """One request; an error reply raises ReplyError."""
        return replies_of(self.exchange([args], timeout), None)[0]

    def pipeline(self, transaction: bool = False) -> Pipeline:
        assert not transaction, "only pipelines without MULTI"
        return Pipeline(self)

    def register_script(self, script: str) -> Script:
        return Script(self, script)

    async def aclose(self) -> None:
        self.sock.close()

    async def execute_command(self, *args: Any) -> Any:
        """Any request, its reply as Redis sent it (as redis-py gives it for a command name
        it has no converter for)."""
        return self.call(*args)

    async def ping(self) -> bool:
        return self.call("PING") == b"PONG"  # type: ignore[no-any-return]

    async def get(self, name: str) -> bytes | None:
        return self.call("GET", name)  # type: ignore[no-any-return]

    async def hget(self, name: str, key: str) -> bytes | None:
        return self.call("HGET", name, key)  # type: ignore[no-any-return]

    async def hmget(self, name: str, keys: Sequence[str]) -> list[bytes | None]:
        return self.call("HMGET", name, *keys)  # type: ignore[no-any-return]

    async def hset(self, name: str, *, mapping: Mapping[str, bytes | str]) -> int:
        return self.call("HSET", name, *(x for kv in mapping.items() for x in kv))  # type: ignore[no-any-return]

    async def hdel(self, name: str, *keys: str) -> int:
        return self.call("HDEL", name, *keys)  # type: ignore[no-any-return]

    async def xrange(self, name: str, min: str = "-", max: str = "+",
                     count: int | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return _entries(self.call("XRANGE", name, min, max, *_count(count)))

    async def xrevrange(self, name: str, max: str = "+", min: str = "-",
                        count: int | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return _entries(self.call("XREVRANGE", name, max, min, *_count(count)))

    async def xread(self, streams: Mapping[str, str], count: int | None = None,
                    block: int | None = None) -> list[Any]:
        """XREAD as redis-py gives it: [[stream, [(id, {field: value}), ...]], ...] ([] if
        nothing came within `block` ms)."""
        wait = () if block is None else ("BLOCK", block)
        reply = self.call("XREAD", *_count(count), *wait, "STREAMS", *streams, *streams.values(),
                          timeout=TIMEOUT + (block or 0) / 1000)
        return [[name, _entries(entries)] for name, entries in reply or []]

    async def pubsub_numsub(self, *args: str) -> list[tuple[bytes, int]]:
        flat = self.call("PUBSUB", "NUMSUB", *args)
        return list(zip(flat[::2], flat[1::2], strict=True))


def bad_url(url: str, e: BaseException) -> ConfigError:
    """One line saying a Redis URL does not parse (never its password)."""
    return ConfigError(f"the Redis URL {describe_url(url)!r} does not parse: {short(e)} "
                       "(set VPCQ_REDIS_URL to redis://HOST:PORT/DB or unix://PATH)")


def unreachable(url: str, e: BaseException) -> ConfigError:
    """One line saying what went wrong with Redis (never its password)."""
    where = describe_url(url)
    if _timed_out(e):
        why = f"Redis at {where} did not answer within {TIMEOUT:.0f} s (paused? overloaded?)"
    elif isinstance(e, OSError | ConnectionLost) or _is_redis(e, "ConnectionError"):
        why = f"cannot reach Redis at {where} ({short(e)})"
    else:
        why = f"Redis at {where} refused: {short(e)}"
    embedded = "VPCQ_REDIS_URL" not in os.environ
    return ConfigError(why + ("; `vpcq up` starts the embedded instance again" if embedded else ""))


def _is_redis(e: BaseException, name: str) -> bool:
    """Whether `e` is redis-py's exception `name` (redis-py is never imported for this: an
    exception of it exists only where it was)."""
    return any(c.__name__ == name and c.__module__ == "redis.exceptions" for c in type(e).__mro__)


def _timed_out(e: BaseException) -> bool:
    """Whether `e` is, or wraps, a timeout (redis-py wraps one met while connecting)."""
    seen: set[int] = set()
    todo: list[object] = [e]
    while todo:
        x = todo.pop()
        if not isinstance(x, BaseException) or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, TimeoutError) or _is_redis(x, "TimeoutError"):
            return True
        todo += [x.__cause__, x.__context__, *x.args]
    return False


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
