"""observe(scope) -> Topology and apply(step): the kernel seen and changed as plain records."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vpcq.errors import KernelError
from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import (
    UNKNOWN,
    Addr,
    App,
    Bridge,
    HostChain,
    LinkState,
    Netns,
    Resource,
    Route,
    Rules,
    Sysctl,
    Topology,
    Veth,
)
from vpcq.workers.kernel import iptables, netns
from vpcq.workers.kernel.apps import Apps
from vpcq.workers.kernel.hostrules import HostRules
from vpcq.workers.kernel.netlink import LinkInfo, Netlink

T = TypeVar("T")
OWNED = "VPCQ-OWNED"  # marks a host table that vpcq created


@dataclass
class Scope:
    """Where to look: namespaces, host interfaces and host chains that vpcq may have made."""

    namespaces: set[str] = field(default_factory=set)  # owned by the VPCs being planned
    host_links: set[str] = field(default_factory=set)
    host_chains: set[str] = field(default_factory=set)
    rules_ns: set[str] = field(default_factory=set)  # namespaces whose rules are read
    sysctls: set[tuple[str | None, str]] = field(default_factory=set)
    veths: dict[tuple[object, ...], Veth] = field(default_factory=dict)  # every pair planned
    # rule tables and sysctls that a change leaves as they were: taken as desired, not read
    # (reading a rule table is an iptables-save process; drift is for `repair` to find)
    trusted: set[tuple[object, ...]] = field(default_factory=set)

    def add(self, t: Topology) -> None:
        for r in t.values():
            match r:
                case Netns():
                    self.namespaces.add(r.name)
                case Veth():
                    self.veths[r.key] = r
                    for ns, name in ((r.ns, r.name), (r.peer_ns, r.peer_name)):
                        if ns is None:
                            self.host_links.add(name)
                case HostChain():
                    self.host_chains.add(r.chain)
                case Rules() if r.text != EMPTY_FILTER:
                    self.rules_ns.add(r.ns)
                case Sysctl():
                    self.sysctls.add((r.ns, r.name))


class Kernel:
    """The only object that reads or changes the kernel."""

    def __init__(self, apps_dir: Path, lock_path: Path) -> None:
        self.nl = Netlink()
        # every netlink call blocks (see Netlink), so all of them are made on this thread
        self._nl_thread = ThreadPoolExecutor(1, thread_name_prefix="vpcq-netlink")
        self._lock_path = lock_path  # serialises host rule changes between this host's workers
        self.apps = Apps(apps_dir)
        # a vpcq namespace -> ((its identity, nft generation), rules as last read)
        self._rules_seen: dict[str, tuple[tuple[int | None, int], str]] = {}
        self._host = HostRules(lock_path.with_name("host-rules.cache"))  # the host's

    def close(self) -> None:
        self._nl_thread.submit(self.nl.close).result()
        self._nl_thread.shutdown()

    async def _netlink(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the netlink thread; the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._nl_thread, fn, *args)

    # ---- the host's internet interface -------------------------------------------------------

    async def default_internet_if(self) -> str | None:
        """$VPCQ_UPLINK, else the interface of the host's default route."""
        env = os.environ.get("VPCQ_UPLINK")
        if env:
            return env
        def read() -> str | None:
            links = self.nl.links(None)
            return next((dev for dst, _gw, dev in self.nl.routes(None, links) if dst == "default"),
                        None)

        return await self._netlink(read)

    # ---- observe -----------------------------------------------------------------------------

    async def observe(self, scope: Scope, desired: Topology, *, all_rules: bool = False) -> Topology:
        """What exists now of everything in `scope`, as the same records `plan` makes."""
        out: Topology = {}
        links = await self._netlink(self._observe_links, scope, desired, out)
        by_ns: dict[str | None, list[str]] = {}
        for where, name in sorted(scope.sysctls, key=lambda k: (k[0] or "", k[1])):
            if where is not None and where not in links:
                continue  # no such namespace (yet)
            want = desired.get(("sysctl", where, name))
            if want is not None and want.key in scope.trusted:
                _put(out, want)
            else:
                by_ns.setdefault(where, []).append(name)
        for where, names in by_ns.items():  # one thread into the namespace reads them all
            values = await netns.arun_in(where, lambda n=names: [_read_sysctl(x) for x in n])  # type: ignore[misc]
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    _put(out, Sysctl(where, name, value))

        def trusted(ns: str) -> bool:
            return ("rules", ns) in scope.trusted and isinstance(desired.get(("rules", ns)), Rules)

        owned = sorted(n for n in links if n is not None)
        read = [ns for ns in owned if all_rules or (ns in scope.rules_ns and not trusted(ns))]
        # the tables are read side by side (an iptables-save process each, on the namespace
        # threads): a drift check of 100 VPCs reads 500
        texts = dict(zip(read, await asyncio.gather(*map(self._rules, read)), strict=True))
        for sub_ns in owned:
            want = desired.get(("rules", sub_ns))
            if sub_ns in texts:
                _put(out, Rules(sub_ns, texts[sub_ns]))
            elif isinstance(want, Rules) and (trusted(sub_ns) or want.text == EMPTY_FILTER):
                _put(out, want)  # left as it was by the change, or vpcq never put rules there
            app = self.apps.observe(sub_ns)
            if app is not None:
                _put(out, App(sub_ns, app.port, app.vpc, app.subnet))
        if scope.host_chains:
            await self._host_chains(out, scope.host_chains)
        return out

    def _observe_links(self, scope: Scope, desired: Topology,
                       out: Topology) -> dict[str | None, dict[str, LinkInfo]]:
        """Namespaces, links, addresses and routes in scope into `out` (on the netlink
        thread); returns the links of each namespace looked into."""
        links: dict[str | None, dict[str, LinkInfo]] = {}
        if scope.host_links:  # looked up by name: the host holds every VPC's uplink
            links[None] = self.nl.links(None, scope.host_links)
        for name in sorted(scope.namespaces):
            self.nl.revalidate(name)
            if netns.exists(name):
                _put(out, Netns(name))
                links[name] = self.nl.links(name)
            elif ("netns", name) not in desired and netns.leftover(name):
                _put(out, Netns(name))  # a removal cut short: removing it again finishes it
        self._veths(out, links, {**scope.veths, **{
            k: r for k, r in desired.items() if isinstance(r, Veth)}})
        for ns, lmap in links.items():
            for li in lmap.values():
                if li.kind in ("bridge",) and ns is not None:
                    _put(out, Bridge(ns, li.name))
                _put(out, LinkState(ns, li.name, li.master, li.up))
            for dev, address, prefixlen in self.nl.addrs(ns, lmap, each=ns is None):
                if dev != "lo":
                    _put(out, Addr(ns, dev, address, prefixlen))
            for dst, gw, dev in self.nl.routes(ns, lmap, each=ns is None):
                _put(out, Route(ns, dst, gw, dev))
        return links

    async def _rules(self, ns: str) -> str:
        """A vpcq namespace's rules as `iptables-save` prints them."""
        return await self._saved(ns) or EMPTY_FILTER

    async def _saved(self, ns: str | None) -> str:
        """`iptables-save` of a namespace (None: the host, see `hostrules`). Read again only
        when the namespace's nftables generation moved since the last read (any rule change,
        by vpcq or by hand, moves it): a warm no-op reconcile forks no iptables-save."""
        gen = await self._netlink(self.nl.generation, ns) if iptables.nft_backend() else None
        if ns is None:  # this thread is in the host namespace, as are the host's threads
            text = self._host.cached(gen)
            return text if text is not None else await netns.arun_in(
                None, lambda: self._host.read_here()[1])
        if gen is None:
            return await iptables.save(ns)
        # a namespace made again starts a new generation count
        seen = (await self._netlink(self._identity, ns), gen)
        cached = self._rules_seen.get(ns)
        if cached is not None and cached[0] == seen:
            return cached[1]
        text = await iptables.save(ns)
        if await self._netlink(self.nl.generation, ns) == gen:  # nothing changed while it was read
            self._rules_seen[ns] = (seen, text)
        return text

    def _identity(self, ns: str | None) -> int | None:
        """The namespace that `ns` names now, None if it names none."""
        if ns is not None and netns.inode(ns) is None:
            return None
        try:
            return self.nl.identity(ns)
        except (KernelError, OSError):
            return None  # removed meanwhile

    def _veths(
        self,
        out: Topology,
        links: dict[str | None, dict[str, LinkInfo]],
        known: dict[tuple[object, ...], Veth],
    ) -> None:
        """Report each known pair that exists, and every other veth end as a stray.

        Only namespaces in scope are looked into. Deleting either end of a veth deletes the
        pair, so an end seen in one namespace vouches for its peer in a namespace not looked
        into (another VPC's router, a subnet this change does not touch).
        """

        def end(ns: str | None, name: str) -> bool | None:
            if ns not in links:
                return None  # not looked into
            li = links[ns].get(name)
            return li is not None and li.kind == "veth"

        covered: set[tuple[str | None, str]] = set()
        for r in known.values():
            a, b = end(r.ns, r.name), end(r.peer_ns, r.peer_name)
            if (a or a is None) and (b or b is None) and (a or b):
                _put(out, r)
                covered |= {(r.ns, r.name), (r.peer_ns, r.peer_name)}
        for ns, lmap in links.items():
            for li in lmap.values():
                if li.kind == "veth" and (ns, li.name) not in covered:
                    _put(out, Veth(ns, li.name, UNKNOWN, UNKNOWN))  # broken or not wanted

    async def _host_chains(self, out: Topology, chains: set[str]) -> None:
        text = await self._saved(None)
        table = ""
        body: dict[tuple[str, str], list[str]] = {}
        jumps: dict[str, set[str]] = {c: set() for c in chains}
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
                continue
            if not line.startswith("-A "):
                continue
            parts = line.split(" ", 2)
            chain, rest = parts[1], parts[2] if len(parts) > 2 else ""
            if chain in chains:
                body.setdefault((table, chain), []).append(rest)
                continue
            target = rest.rsplit(" -j ", 1)[-1] if " -j " in f" {rest}" else ""
            target = rest.split("-j ", 1)[1].strip() if "-j " in rest else target
            if target in chains:
                jumps[target].add(f"{table}:{chain} {rest}")
        for chain in chains:
            f = tuple(body.get(("filter", chain), ()))
            n = tuple(body.get(("nat", chain), ()))
            if not f and not n and not jumps[chain]:
                continue
            uplink = _uplink_from(jumps[chain], chain)
            _put(out, HostChain(chain, uplink, f, n))

    # ---- apply -------------------------------------------------------------------------------

    async def apply(self, step: Step) -> None:
        """Carry out one step; idempotent (an effect that already exists is success)."""
        r = step.resource
        delete = step.op == "delete"
        match r:
            case Netns():
                await self._netlink(self._forget_namespace, r.name)
                if delete:
                    await netns.aremove(r.name)
                else:
                    await netns.acreate(r.name)
            case Sysctl():
                await netns.arun_in(r.ns, lambda: _write_sysctl(r.name, r.value))
            case Bridge() | Veth() | LinkState() | Addr() | Route():
                await self._netlink(self._link_step, step)
            case Rules():
                await iptables.restore(r.ns, EMPTY_FILTER if delete else r.text)
            case HostChain():
                await self.apply_host_chains([r], delete)
            case App():
                if delete:
                    await self.apps.stop(r.ns)
                else:
                    await self.apps.stop(r.ns)  # a stale or different app goes first
                    await self.apps.start(r.ns, r.port, r.vpc, r.subnet)

    def _forget_namespace(self, name: str) -> None:
        """Before a namespace is made or removed: drop what is known through its name (its
        sockets pin it, and a new namespace of that name is another one)."""
        self.nl.forget(name)
        self._rules_seen.pop(name, None)

    def _link_step(self, step: Step) -> None:
        """A step on a link, an address or a route (on the netlink thread)."""
        r = step.resource
        delete = step.op == "delete"
        match r:
            case Bridge():
                if delete:
                    self.nl.delete_link(r.ns, r.name)
                else:
                    self.nl.add_bridge(r.ns, r.name, up=step.state is not None)
            case Veth():
                if delete:
                    self.nl.delete_link(r.ns, r.name)
                else:
                    st = step.state
                    self.nl.add_veth(r.ns, r.name, r.peer_ns, r.peer_name, st is not None,
                                     st.master if st is not None else None)
            case LinkState():
                if not delete:
                    self.nl.set_link(r.ns, r.name, r.master)
            case Addr():
                if delete:
                    self.nl.del_addr(r.ns, r.dev, r.address, r.prefixlen)
                else:
                    self.nl.add_addr(r.ns, r.dev, r.address, r.prefixlen)
            case Route():
                if delete:
                    self.nl.del_route(r.ns, r.dst)
                else:
                    self.nl.replace_route(r.ns, r.dst, r.gateway, r.dev)

    async def apply_batch(self, steps: Sequence[Step], first: int, guard: Callable[[], None],
                          before: Before | None = None) -> None:
        """Carry out a run of steps that `batch_end` found can go together (the first is
        step number `first` of its change). `guard()` is called before each step and stops
        the run by raising (a lost lease); `before(n, step)`, if given, is awaited on the
        event loop before each (fault injection, a line per step)."""
        r0 = steps[0].resource
        if isinstance(r0, HostChain) and len(steps) > 1:  # one restore for them all
            for n, step in enumerate(steps, first):
                guard()
                if before is not None:
                    await before(n, step)
            chains = [s.resource for s in steps if isinstance(s.resource, HostChain)]
            await self.apply_host_chains(chains, delete=steps[0].op == "delete")
        elif isinstance(r0, _LINKS):  # one trip to the netlink thread for the whole run
            await self._netlink(self._link_steps, steps, first, guard, before,
                                asyncio.get_running_loop())
        else:
            for n, step in enumerate(steps, first):
                guard()
                if before is not None:
                    await before(n, step)
                await self.apply(step)

    def _link_steps(self, steps: Sequence[Step], first: int, guard: Callable[[], None],
                    before: Before | None, loop: asyncio.AbstractEventLoop) -> None:
        """Link, address and route steps, on the netlink thread; veths of one namespace that
        are deleted one after another go in one request (`Netlink.delete_links`)."""
        i = 0
        while i < len(steps):
            end = i + 1
            r = steps[i].resource
            if steps[i].op == "delete" and isinstance(r, Veth):
                while (end < len(steps) and steps[end].op == "delete"
                       and isinstance(steps[end].resource, Veth) and steps[end].resource.ns == r.ns):
                    end += 1
            for n in range(i, end):
                guard()
                if before is not None:
                    asyncio.run_coroutine_threadsafe(before(first + n, steps[n]), loop).result()
            if end - i > 1:
                names = [s.resource.name for s in steps[i:end] if isinstance(s.resource, Veth)]
                self.nl.delete_links(r.ns, names)
            else:
                self._link_step(steps[i])
            i = end

    async def apply_host_chains(self, chains: list[HostChain], delete: bool) -> None:
        """Create (or update) or delete host chains and their jumps, in one restore: the host
        holds every VPC's chains, and a cleanup or a restore after a reboot has hundreds."""
        # the jump rules sit in one block, sorted by chain, so the host's tables are a function
        # of the log and not of the order in which VPCs were made, rolled back or restored;
        # the positions are read and used under a lock shared by this host's workers
        def create() -> None:
            key, text = self._host.read_here()  # what observe read, unless a rule changed since
            tables = {ln[1:] for ln in text.splitlines() if ln.startswith("*")}
            jumps = [j for r in chains for j in _jump_rules(r)]
            doc = []
            for table in ("filter", "nat"):
                doc.append(f"*{table}")
                # a table vpcq brings into existence gets an owner tag, so that the last VPC's
                # teardown can remove the table too and leave `nft list ruleset` as it found it
                doc += [] if table in tables else [f":{OWNED} - [0:0]"]
                for r in chains:
                    doc.append(f":{r.chain} - [0:0]")
                    doc += [f"-A {r.chain} {rule}" for rule in (r.filter if table == "filter" else r.nat)]
                for chain in sorted({c for t, c, _ in jumps if t == table}):
                    new = [rest for t, c, rest in jumps if t == table and c == chain]
                    doc += [f"-I {chain} {pos} {rest}"
                            for pos, rest in jump_inserts(chain_rules(text, table, chain), new)]
                doc.append("COMMIT")
            self._host.restore_here(key, text, "\n".join(doc) + "\n")

        # read, delete and drop emptied tables under the lock: two workers tearing down the
        # last two VPCs at once must not both try to remove the same table
        def teardown() -> None:
            key, text = self._host.read_here()
            doc = chain_teardown(text, [r.chain for r in chains])
            if doc:
                self._host.restore_here(key, text, doc)
            iptables.drop_owned_tables_here(OWNED, self._host.read_here()[1])

        await _with_host_rules(self._lock_path, teardown if delete else create)


BATCH = 500  # steps carried out together at most
_LINKS = (Bridge, Veth, LinkState, Addr, Route)  # the kinds of objects made with netlink
Before = Callable[[int, Step], Coroutine[Any, Any, None]]


def batch_end(steps: Sequence[Step], i: int) -> int:
    """The end of the run of steps from `i` that `apply_batch` carries out together: host
    chains all created or all deleted (one restore for them all), or links, addresses and
    routes (one trip to the netlink thread: each trip can wait for the interpreter lock)."""
    r0 = steps[i].resource
    delete = steps[i].op == "delete"

    def joins(s: Step) -> bool:
        r = s.resource
        if isinstance(r0, HostChain):
            return isinstance(r, HostChain) and (s.op == "delete") == delete
        return isinstance(r0, _LINKS) and isinstance(r, _LINKS)

    j = i + 1
    while j < len(steps) and j - i < BATCH and joins(steps[j]):
        j += 1
    return j


_JUMP = re.compile(r"-j (VPCQ-[0-9a-f]+)$")


def chain_teardown(save_text: str, chains: Collection[str]) -> str:
    """An iptables-restore document (for --noflush) removing chains and every rule that
    jumps to them, in every table where they exist; empty if there is nothing to remove."""
    doomed = set(chains)
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in save_text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        else:
            current.append(line)
    doc: list[str] = []
    for table, lines in tables.items():
        jumps = ["-D " + ln[3:] for ln in lines
                 if ln.startswith("-A ") and ln.split(" ", 2)[1] not in doomed
                 and ln.rpartition(" -j ")[2] in doomed]
        declared = sorted({ln[1:].split(" ", 1)[0] for ln in lines if ln.startswith(":")} & doomed)
        if jumps or declared:
            doc += [f"*{table}", *jumps, *(f"-F {c}" for c in declared),
                    *(f"-X {c}" for c in declared), "COMMIT"]
    return "\n".join(doc) + "\n" if doc else ""


def chain_rules(save_text: str, table: str, chain: str) -> list[str]:
    """The rules of one chain of an `iptables-save` text, in order, without `-A CHAIN`."""
    out, current, head = [], "", f"-A {chain} "
    for line in save_text.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(head):
            out.append(line[len(head):])
    return out


def jump_inserts(rules: list[str], new: list[str]) -> list[tuple[int, str]]:
    """`-I` positions that put each new jump into the chain's block of vpcq jumps, sorted.

    A vpcq jump goes before the first vpcq jump that sorts after it, else right after the
    last one, else at the top; rules of other programs keep their places. New rules that
    are already there are left alone.
    """

    def key(rule: str) -> tuple[str, str] | None:
        m = _JUMP.search(rule)
        return (m.group(1), rule) if m else None

    rules, out = list(rules), []
    for rule in sorted(set(new) - set(rules), key=lambda r: key(r) or ("", r)):
        k, pos, last = key(rule), 0, 0
        for i, existing in enumerate(rules, 1):
            ek = key(existing)
            if ek is None:
                continue
            if k is not None and ek > k:
                pos = i
                break
            last = i
        pos = pos or last + 1
        rules.insert(pos - 1, rule)
        out.append((pos, rule))
    return out


async def _with_host_rules(path: Path, work: Callable[[], None], wait: float = 30.0) -> None:
    """Run `work` on a namespace thread in the host, holding the host-rules lock that this
    host's workers share. The wait for the lock and everything done under it happen on that
    thread: the event loop goes on meanwhile, and the lock is held for the work alone, not
    also for the loop's turns back to a job between its steps (with two workers, those turns
    had the lock held for 80% of a batch). A lock held elsewhere for longer than `wait` is a
    transient error: a thread never waits without end (nor, then, a worker's exit)."""

    def locked() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        with open(path, "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise KernelError("lock", "host rules", f"held elsewhere for {wait:.0f} s",
                                          transient=True) from None
                    time.sleep(0.001)
            try:
                work()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    await netns.arun_in(None, locked)


def _jump_rules(r: HostChain) -> list[tuple[str, str, str]]:
    return [
        ("filter", "FORWARD", f"-i {r.uplink} -j {r.chain}"),
        ("filter", "FORWARD", f"-o {r.uplink} -j {r.chain}"),
        ("nat", "POSTROUTING", f"-j {r.chain}"),
    ]


def _uplink_from(jumps: set[str], chain: str) -> str:
    """The uplink named by a complete set of jump rules, else '' (so diff repairs them)."""
    for j in jumps:
        if j.startswith("filter:FORWARD -i "):
            up = j.split()[2]
            probe = HostChain(chain, up, (), ())
            if {f"{t}:{c} {rest}" for t, c, rest in _jump_rules(probe)} <= jumps:
                return up
    return ""


def _put(t: Topology, r: Resource) -> None:
    t[r.key] = r


def _read_sysctl(name: str) -> str | None:
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{name}", "w") as f:
            f.write(value)
    except OSError as e:
        raise KernelError("set", f"sysctl {name}", str(e)) from e

