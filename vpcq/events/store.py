"""The event store: the only code that touches the Redis stream that is the log.

One stream holds the global, ordered log. Each entry is a commit (see `Commit`): the events
one append wrote for one command, with who/when/why stored once. An entry's id is
`<seq of its first event>-0`, so events are found by sequence number without an index.
Appends are checked against the version the decision was made on, in one Lua script
(atomic, one round trip). The embedded Redis fsyncs its append-only file before it
acknowledges a write, so an acknowledged append survives a crash.

Entries written before commits existed hold one envelope each (field `e`); they are read
as one-event commits, so an old log replays unchanged.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import ValidationError

from vpcq.errors import ConcurrencyError, LockLost
from vpcq.events.blocking import BlockingRedis, Requests
from vpcq.events.schema import (
    COMMIT,
    ENVELOPE,
    OUTCOMES,
    SCHEMA_VERSIONS,
    Commit,
    Envelope,
    Rejected,
    commits_of,
)
from vpcq.events.text import escape
from vpcq.events.types import explain, hidden_text, plain_json, show
from vpcq.events.upcast import upcast, upcast_event

# ARGV: expected version (-1: any), a lock token ('' for none), then quadruples (once-key,
# command key, event count, commit JSON without its sequence number). With a token, KEYS[6..]
# are locks that must all still hold it (fencing: a worker whose locks lapsed, and that another
# worker may have taken over, records nothing). A commit with a once-key (an outcome's command id) is
# written only if no commit with that key was written before: a job that runs twice can never
# record an outcome twice. A commit with a command key (the id of the command whose
# CommandAccepted it starts with) is indexed by it, as an outcome is by its once-key, so a
# command is found without reading the log; KEYS[5] says from which sequence number on every
# command is (a log written before the index existed has older commands that are not). The
# script numbers each commit (`"s"`, also the entry's id) as it writes it.
#
# The version is also checked against the stream's last entry: an entry another client wrote
# past it (quarantined by every reader, see `Rejected`) takes its numbers, counted as
# `_extent` counts them, so the next commit's id is above it and the readers' fold agrees on
# the version; a version key that is not a number is worked out from that entry alone.
_APPEND = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if top ~= nil then
  local n = tonumber(string.match(top[1], '^(%d+)%-')) or 0
  if cur == nil or n > cur then
    local count = 1
    for j = 1, #top[2], 2 do
      if top[2][j] == 'c' then
        local ok, body = pcall(cjson.decode, top[2][j + 1])
        if ok and type(body) == 'table' and body['s'] == n and type(body['e']) == 'table'
            and #body['e'] > 0 then
          count = #body['e']
        end
      end
    end
    cur = math.max(cur or 0, n + count - 1)
  end
elseif cur == nil then
  cur = 0
end
local expected = tonumber(ARGV[1])
if expected >= 0 and cur ~= expected then
  return redis.error_reply('VERSION_CONFLICT ' .. cur)
end
if ARGV[2] ~= '' then
  for k = 6, #KEYS do
    if redis.call('GET', KEYS[k]) ~= ARGV[2] then
      return redis.error_reply('LOCK_LOST ' .. KEYS[k])
    end
  end
end
redis.call('SETNX', KEYS[5], cur + 1)
for i = 3, #ARGV, 4 do
  local once = ARGV[i]
  if once == '' or redis.call('HSETNX', KEYS[3], once, cur + 1) == 1 then
    local body = '{"s":' .. (cur + 1) .. ',' .. string.sub(ARGV[i + 3], 2)
    redis.call('XADD', KEYS[1], (cur + 1) .. '-0', 'c', body)
    if ARGV[i + 1] ~= '' then
      redis.call('HSET', KEYS[4], ARGV[i + 1], cur + 1)
    end
    cur = cur + tonumber(ARGV[i + 2])
  end
end
redis.call('SET', KEYS[2], cur)
return cur
"""

PAGE = 2000  # entries per XRANGE

# XRANGE for a replay, its reply left as Redis sends it. redis-py converts a reply by the
# name of its command (each entry's fields into a dict), and has no converter for the name
# as bytes; Redis reads command names in any form. A dict for each of a replay's entries
# costs more than reading the entry, and the reader needs only its one field.
RAW_XRANGE = b"XRANGE"


class Fence(Protocol):
    """Locks an append must still hold (a worker's lease)."""

    names: list[str]
    keys: list[str]
    token: str


def encode(commit: Commit) -> bytes:
    """A commit as the append script takes it: its JSON without the sequence number."""
    return commit.model_dump_json(by_alias=True, exclude={"seq"}).encode()


def stored(commit: Commit) -> bytes:
    """A commit as the log holds it (what the append script makes of `encode`)."""
    return commit.model_dump_json(by_alias=True).encode()


def checked(events: Sequence[Envelope]) -> list[tuple[Commit, bytes]]:
    """The commits of `events` and what the append script is given for each, read back as a
    reader would first: an event made without validation (model_construct) is refused here
    (BadEntry), not written for every reader to quarantine."""
    out = []
    for c in commits_of(events):
        data = encode(c)
        decode(b'{"s":1,' + data[1:])
        out.append((c, data))
    return out


# Every event type is at this version today (see `decode`).
_LATEST = max(SCHEMA_VERSIONS.values())


class BadEntry(ValueError):
    """A stream entry that does not decode to a commit vpcq can trust; says why, in one line."""


def decode(data: bytes) -> Commit:
    """A commit read back from the log, its events upcast to today's schema; BadEntry if
    it is not one.

    The fast path hands the stored bytes straight to pydantic's JSON validator (no Python
    objects for the JSON first, as json.loads plus validation makes), in strict mode: vpcq
    writes every field in its own JSON type, so no lax coercion has to be tried. A commit
    holding an event stored under an older schema fails that or shows its version, and takes
    the slow path, which upcasts and validates as laxly as any version was written.

    Strings that are only shown (`Shown`) are checked here for the whole entry at once: an
    entry that is not plain JSON (ASCII, no escape) is searched for a control character.
    """
    if not plain_json(data):
        _shown(data)
    try:
        c: Commit = _commit_validator()(data, strict=True)
        if len(c.versions) != len(c.events):
            raise BadEntry(f"{len(c.events)} events but {len(c.versions)} schema versions")
        # a stored version is never above today's, so at the latest one nothing is stale
        if min(c.versions) == max(c.versions) == _LATEST or all(
            v == SCHEMA_VERSIONS[e.type] for v, e in zip(c.versions, c.events, strict=True)
        ):
            return c
    except ValidationError:
        pass
    try:
        raw: dict[str, Any] = json.loads(data)
        raw["e"] = [upcast_event(e, v) for v, e in zip(raw["v"], raw["e"], strict=True)]
        raw["v"] = [SCHEMA_VERSIONS[e["type"]] for e in raw["e"]]
        return COMMIT.validate_python(raw)
    except ValidationError as e:
        raise BadEntry(_why(e)) from None
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
        raise BadEntry(_broken(e)) from None


def decode_envelope(seq: int, data: bytes) -> Envelope:
    """An entry of the first layout (one envelope per entry), upcast like any other."""
    if not plain_json(data):
        _shown(data)
    try:
        env = ENVELOPE.validate_json(b'{"seq":%d,%s' % (seq, data[1:]))
        if env.schema_version == SCHEMA_VERSIONS[env.event.type]:
            return env
    except ValidationError:
        pass
    try:
        raw: dict[str, Any] = json.loads(data)
        raw["seq"] = seq
        return ENVELOPE.validate_python(upcast(raw))
    except ValidationError as e:
        raise BadEntry(_why(e)) from None
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
        raise BadEntry(_broken(e)) from None


def _shown(data: bytes) -> None:
    try:
        hidden = hidden_text(json.loads(data))
    except (ValueError, RecursionError):
        return  # not JSON: the validator says so
    if hidden is not None:
        raise BadEntry(f"{show(hidden)} holds a control or format character")


def _why(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    return f"{where + ': ' if where else ''}{explain(err)}"


def _broken(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON ({e.msg} at offset {e.pos})"
    if isinstance(e, KeyError):
        return f"no field {show(e.args[0])}"
    if isinstance(e, RecursionError):
        return "JSON nested too deep"
    if isinstance(e, TypeError):
        return "not a commit (a field has the wrong JSON type)"
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


_ID = re.compile(rb"([1-9][0-9]{0,15})-0")


def decode_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Commit:
    """One stream entry, in either layout, as a commit; BadEntry if it is not one vpcq wrote
    (a body that is not a commit, an id that is not `<its first seq>-0`)."""
    m = _ID.fullmatch(entry_id)
    if m is None:
        raise BadEntry("its id is not <seq>-0 as vpcq writes them")
    seq = int(m.group(1))
    data = fields.get(b"c")
    if data is not None:
        c = decode(data)
        if c.seq != seq:
            raise BadEntry(f"it says it starts at event {c.seq}, its id at {seq}")
        return c
    data = fields.get(b"e")
    if data is None:
        raise BadEntry("it has no field c (a commit) or e (an event)")
    (commit,) = commits_of([decode_envelope(seq, data)])
    return commit


def _extent(entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[int, int]:
    """The sequence numbers a rejected entry takes, as the append script counts them: from
    its id's, one, or as many as the events of a body that says it starts there."""
    head = entry_id.split(b"-", 1)[0]
    seq = int(head) if head.isdigit() and len(head) <= 16 else 0
    count = 1
    try:
        body = json.loads(fields[b"c"]) if b"c" in fields else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and body.get("s") == seq and isinstance(body.get("e"), list) \
            and body["e"]:
        count = len(body["e"])
    return seq, seq + count - 1


class Reader:
    """Checks a run of entries in log order: each decodes, and starts after the one before
    it; one that does not is a `Rejected`, logged once by each reader process."""

    def __init__(self, last: int | None = None) -> None:
        self.last = last  # the last sequence number taken so far (None: not known yet)

    def check(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Commit | Rejected:
        try:
            c = decode_entry(entry_id, fields)
            if self.last is not None and c.seq <= self.last:
                raise BadEntry(f"it starts at event {c.seq}, inside the entry before it "
                               f"(which ends at {self.last})")
        except BadEntry as e:
            seq, last = _extent(entry_id, fields)
            if self.last is not None and seq <= self.last:
                last = self.last  # inside what is taken: it takes nothing more (nor does
                #                   the append script count it: its id is not past the version)
            r = Rejected(escape(entry_id.decode(errors="replace"), 40), seq, last,
                         escape(str(e), 300))
            self.last = max(self.last or 0, last)
            if r.entry_id not in _SAID:
                _SAID[r.entry_id] = r
                # said in the log of a process that keeps one (a worker, `vpcq up`, the console:
                # they load structlog and configure it); a CLI read loads no logging, and says
                # it on stderr from rejected_seen() instead
                structlog = sys.modules.get("structlog")
                if structlog is not None:
                    structlog.get_logger("vpcq.store").warning("rejected", entry=r.entry_id,
                                                               reason=r.reason)
            return r
        self.last = c.last
        return c

    def check_page(self, page: list[Any]) -> list[Commit | Rejected]:
        """`check` of each entry of an XRANGE page as Redis sends it (`[id, [field, value,
        ...]]`, see `EventStore._range`), with the common case inline: a page whose entries
        all hold one field, a commit, in plain JSON (see `plain_json`: one scan of the page's
        bytes for all of them), each of today's schema versions, each numbered as its id
        says and after the one before. Anything else is checked by `check`, which says why.
        """
        bodies: list[Any] = [flat[1] if len(flat) == 2 and flat[0] == b"c" else None for _, flat in page]
        if None in bodies or not plain_json(b"".join(bodies)):
            return [self.check(entry_id, _fields(flat)) for entry_id, flat in page]
        validate = _commit_validator()
        out: list[Commit | Rejected] = []
        append = out.append
        last = self.last
        for (entry_id, flat), body in zip(page, bodies, strict=True):
            try:
                c: Commit = validate(body, strict=True)
            except ValidationError:
                pass
            else:
                seq, n = c.seq, len(c.events)
                # one version per event, each today's; and the id check: `<seq>-0`, as
                # decode_entry's pattern says, is the only form that formats back to itself
                # (None, nothing taken yet, as 0: an id's seq is 1 or above, see _ID)
                if seq > (last or 0) and c.versions.count(_LATEST) == n == len(c.versions) \
                        and entry_id == b"%d-0" % seq:
                    append(c)
                    last = seq + n - 1
                    continue
            self.last = last
            append(self.check(entry_id, _fields(flat)))  # the slow path: upcast, or say why
            last = self.last
        self.last = last
        return out


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """An entry's fields as redis-py gives them: {field: value}."""
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _commit_validator() -> Any:
    """Commit's own pydantic-core validate_json, called directly (its schema is built on first
    use, as every model's is). The model's, not COMMIT's: a TypeAdapter's validator takes the
    adapter's config, and so would cache strings (see `Frozen`)."""
    global _VALIDATE
    if _VALIDATE is None:
        Commit.model_rebuild()
        _VALIDATE = Commit.__pydantic_validator__.validate_json
    return _VALIDATE


_VALIDATE: Any = None


_SAID: dict[str, Rejected] = {}  # the entries this process has logged as rejected


def rejected_seen() -> list[Rejected]:
    """The entries this process has rejected so far, each once (for the CLI to say so)."""
    return list(_SAID.values())


class EventStore:
    """append / read / tail over one Redis stream."""

    def __init__(self, redis: Requests, prefix: str = "vpcq") -> None:
        self.redis = redis
        # the next page is asked for while this one is decoded, where requests can overlap
        self._prefetch = not isinstance(redis, BlockingRedis)
        self.stream = f"{prefix}:log"
        self.version_key = f"{prefix}:version"
        self.outcomes_key = f"{prefix}:outcomes"  # command id -> seq of its outcome
        self.commands_key = f"{prefix}:commands"  # command id -> seq of its CommandAccepted
        self.indexed_key = f"{prefix}:commands:since"  # every command from this seq is indexed
        self._append = redis.register_script(_APPEND)

    async def version(self) -> int:
        """The sequence number of the last event (0 for an empty log)."""
        v = await self.redis.get(self.version_key)
        if v is None or v.isdigit():
            return int(v or 0)
        top = await self.redis.xrevrange(self.stream, "+", "-", count=1)  # as the append does
        return _extent(*top[0])[1] if top else 0

    async def append(
        self, events: Sequence[Envelope], expected_version: int | None, fence: Fence | None = None
    ) -> int:
        """Append atomically if the log is at `expected_version` (None: anywhere) and, with a
        `fence`, only while its locks still hold its token (else LockLost); new version.

        The events are numbered by the store, from the version up. A command's outcome
        (ChangeApplied or ChangeFailed) is written at most once.
        """
        if not events:
            return await self.version()
        args: list[Any] = [-1 if expected_version is None else expected_version,
                           fence.token if fence is not None else ""]
        for c, data in checked(events):
            first = c.events[0].type
            once = c.command_id if first in OUTCOMES else ""
            command = c.command_id if first == "CommandAccepted" else ""
            args += [once, command, len(c.events), data]
        keys = [self.stream, self.version_key, self.outcomes_key, self.commands_key,
                self.indexed_key, *(fence.keys if fence is not None else ())]
        try:
            result = await self._append(keys=keys, args=args)
        except Exception as e:  # the client's error reply (redis-py's or the blocking one's)
            text = str(e)
            if text.startswith("VERSION_CONFLICT"):
                actual = int(text.split()[1])
                raise ConcurrencyError(expected_version or 0, actual) from e
            if text.startswith("LOCK_LOST") and fence is not None:
                raise LockLost(fence.names) from e
            raise
        return int(result)

    async def command(self, command_id: str) -> tuple[Commit | None, Commit | None]:
        """One command's commits: the one its CommandAccepted starts, and its outcome's (None:
        no such command; no outcome yet), found by the indexes the append script keeps. Only
        in a log written before the command index is an older command searched for."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.commands_key, command_id)
        pipe.hget(self.outcomes_key, command_id)
        pipe.get(self.indexed_key)
        accepted_seq, outcome_seq, since = await pipe.execute()
        accepted = await self._at(int(accepted_seq)) if accepted_seq is not None else None
        older = int(since) - 1 if since is not None else None  # None: nothing is indexed
        if accepted is None and (older is None or older > 0):
            accepted = await self._search(command_id, older)
        if accepted is None:
            return None, None
        return accepted, (await self._at(int(outcome_seq)) if outcome_seq is not None else None)

    async def _at(self, seq: int) -> Commit | None:
        entries = await self.redis.xrange(self.stream, f"{seq}-0", f"{seq}-0")
        c = Reader().check(*entries[0]) if entries else None
        return c if isinstance(c, Commit) else None

    async def _search(self, command_id: str, upto: int | None) -> Commit | None:
        async for page in self.pages(0, upto):
            for c in page:
                if isinstance(c, Commit) and c.command_id == command_id \
                        and c.events[0].type == "CommandAccepted":
                    return c
        return None

    async def read(self, after: int = 0, upto: int | None = None) -> list[Envelope]:
        """Events with `after` < seq <= `upto`, in order (rejected entries left out)."""
        with no_gc():
            return [env async for env in self.iter(after, upto)]

    async def iter(self, after: int = 0, upto: int | None = None) -> AsyncIterator[Envelope]:
        """Stream events page by page (rejected entries left out)."""
        async for page in self.pages(after, upto):
            for c in page:
                if isinstance(c, Commit):
                    for env in c.envelopes():
                        yield env

    async def entries(self, after: int = 0) -> AsyncIterator[Envelope | Rejected]:
        """Every event after `after`, and every rejected entry where it stands (`vpcq log`)."""
        async for page in self.pages(after):
            for c in page:
                if isinstance(c, Commit):
                    for env in c.envelopes():
                        yield env
                else:
                    yield c

    async def pages(self, after: int = 0, upto: int | None = None
                    ) -> AsyncIterator[list[Commit | Rejected]]:
        """The commits holding events `after` < seq <= `upto`, clipped to that range, a page
        at a time; an entry that is not a commit vpcq wrote is a `Rejected` in its place. On
        an asyncio client the next page is requested before this one is decoded, so Redis
        reads while Python decodes.
        """
        last = "+" if upto is None else f"{upto}-0"
        reader = Reader()
        if after > 0:  # one round trip: the commit holding event `after`, and the first page
            pipe = self.redis.pipeline(transaction=False)
            pipe.xrevrange(self.stream, f"{after}-0", "-", count=1)
            pipe.execute_command(RAW_XRANGE, self.stream, f"({after}-0", last, "COUNT", PAGE)
            prev, page = await pipe.execute()
            head = _straddling(reader, prev, after, upto)
            if head is not None:
                yield [head]
        else:
            page = await self._range("-", last)
        more: Any = None  # an asyncio.Future: the next page, asked for before this one is decoded
        check = reader.check_page
        try:
            while page:
                start = "(" + page[-1][0].decode() if len(page) == PAGE else None
                if start is not None and self._prefetch:
                    import asyncio  # loaded already: only an asyncio client prefetches

                    more = asyncio.ensure_future(self._range(start, last))
                    await asyncio.sleep(0)  # let the request go out before decoding
                commits = check(page)
                if upto is not None:  # only the range's last commit can overrun `upto`
                    end = commits[-1]
                    clipped = end.clip(after, upto) if isinstance(end, Commit) \
                        else end._replace(last=min(end.last, upto))
                    commits[-1:] = [clipped] if clipped is not None else []
                yield commits
                if more is not None:
                    page, more = await more, None
                else:
                    page = await self._range(start, last) if start else []
        finally:
            if more is not None:  # the reader stopped early
                more.cancel()

    async def _range(self, start: str, last: str) -> list[Any]:
        """A page of XRANGE, as Redis sends it: [id, [field, value, ...]] for each entry."""
        reply: list[Any] = await self.redis.execute_command(RAW_XRANGE, self.stream, start, last,
                                                            "COUNT", PAGE)
        return reply

    async def follow(self, after: int, block_ms: int = 1000) -> AsyncIterator[Envelope]:
        """Events after `after`, waiting for new ones (rejected entries left out); runs until
        the caller stops."""
        async for batch in self.arrivals(after, block_ms):
            for env in batch:
                yield env

    async def arrivals(self, after: int, block_ms: int = 1000) -> AsyncGenerator[list[Envelope], None]:
        """The events after `after` as they come, a list per read (rejected entries left
        out); an empty list when none came within `block_ms` (a caller that also watches a
        clock gets its turn)."""
        reader = Reader()
        prev = await self.redis.xrevrange(self.stream, f"{after}-0", "-", count=1) if after > 0 else []
        head = _straddling(reader, prev, after, None)
        if isinstance(head, Commit):
            yield head.envelopes()
        last = f"{after}-0"
        while True:
            res = await self.redis.xread({self.stream: last}, count=PAGE, block=block_ms)
            batch: list[Envelope] = []
            for _stream, entries in res or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    c = reader.check(entry_id, fields)
                    if isinstance(c, Commit):
                        batch += c.envelopes()
            yield batch

    async def check_version(self) -> list[str]:
        """What is wrong with the version key, as lines: it must be a number, and the last
        sequence number the stream's entries take."""
        raw = await self.redis.get(self.version_key)
        top = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        last = _extent(*top[0])[1] if top else 0
        if raw is not None and not raw.isdigit():
            return [f"{self.version_key} holds {show(raw)}, not a number (appends work it out "
                    f"from the stream: {last})"]
        if int(raw or 0) < last:
            return [f"{self.version_key} is {int(raw or 0)}, behind the stream's last entry "
                    f"({last}): the next append goes after the entry"]
        return []

    async def rejected(self) -> list[Rejected]:
        """Every entry of the log that readers quarantine (`vpcq fsck`)."""
        return [c async for page in self.pages() for c in page if isinstance(c, Rejected)]


def _straddling(reader: Reader, prev: list[Any], after: int, upto: int | None
                ) -> Commit | Rejected | None:
    """From XREVRANGE <after> - COUNT 1: the events after `after` in the commit holding
    event `after`, if any (a read may start inside a commit)."""
    if not prev:
        return None
    c = reader.check(*prev[0])
    if isinstance(c, Rejected):
        return c if c.last > after else None
    return c.clip(after, upto)


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a burst of acyclic objects is made.

    Decoding a long log allocates hundreds of thousands of objects, and every allocation
    threshold crossed triggers a collection that walks all of them, over and over as the
    burst grows. Events and states hold no reference cycles.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

