"""Namespace calls run on a pool of long-lived threads; none runs in the wrong namespace."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.kernel.conftest import Net
from vpcq.testing import probe
from vpcq.workers.kernel import netns

pytestmark = pytest.mark.kernel


def _ns_here() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_calls_run_where_they_are_asked_to(net: Net):
    host = netns.inode(net.host)
    mine = os.stat("/proc/self/ns/net").st_ino
    assert host != mine
    for _ in range(20):  # the same threads go back and forth
        assert netns.run_in(net.host, _ns_here) == host
        assert netns.run_in(None, _ns_here) == mine
    assert asyncio.run(netns.arun_in(net.host, _ns_here)) == host


def test_a_thread_left_in_another_namespace_goes_home_before_its_next_call(net: Net):
    """If a thread's setns back fails (`_back` records it), its next call still runs in the
    process's own namespace. Every pool thread is made to stray at once (a barrier keeps
    them all busy), so the calls after it land on strayed threads whichever they get."""
    n = netns._threads()._max_workers
    mine = os.stat("/proc/self/ns/net").st_ino
    strays, homes = threading.Barrier(n), threading.Barrier(n)

    def stray() -> int:
        fd = os.open(netns.path(net.host), os.O_RDONLY)
        try:
            netns._check(netns._libc.setns(fd, netns.CLONE_NEWNET), "setns")
        finally:
            os.close(fd)
        netns._strayed.ns = net.host  # what `_back` records when the setns back fails
        strays.wait(10)
        return _ns_here()

    def where() -> int:
        homes.wait(10)
        return _ns_here()

    with ThreadPoolExecutor(n) as callers:
        strayed = list(callers.map(lambda _: netns._in_thread(stray), range(n)))
        assert strayed == [netns.inode(net.host)] * n
        back = list(callers.map(lambda _: netns._in_thread(where), range(n)))
    assert back == [mine] * n


def test_a_new_namespace_has_no_ipv6_on_links_made_in_it_later(net: Net):
    ns = net.name("v6")
    netns.create(ns)
    try:
        probe.save(net.host, "ip", "link", "add", net.name("v6x"), "type", "veth", "peer", "name",
                   "eth0", "netns", ns)
        probe.save(ns, "ip", "link", "set", "eth0", "up")
        conf = {c: probe.save(ns, "cat", f"/proc/sys/net/ipv6/conf/{c}/disable_ipv6").strip()
                for c in ("all", "default", "lo", "eth0")}
        assert conf == dict.fromkeys(conf, "1")
        assert probe.save(ns, "ip", "-6", "-o", "addr", "show") == ""
    finally:
        netns.remove(ns)


def test_a_call_from_a_thread_of_our_own_runs_on_it_and_comes_back(net: Net):
    """The kernel's netlink thread enters namespaces itself (no hand-off to the pool), and is
    back in the process's namespace after each call, even one that raised."""
    host = netns.inode(net.host)
    mine = os.stat("/proc/self/ns/net").st_ino
    seen: list[tuple[int, int]] = []

    def fail() -> None:
        raise RuntimeError("inside")

    def caller() -> None:
        me = threading.get_ident()
        for _ in range(5):
            seen.append(netns.run_in(net.host, lambda: (threading.get_ident(), _ns_here())))
            seen.append((me, _ns_here()))
        with pytest.raises(RuntimeError):
            netns.run_in(net.host, fail)
        seen.append((me, _ns_here()))

    t = threading.Thread(target=caller)
    t.start()
    t.join(30)
    assert len(seen) == 11
    assert {ident for ident, _ in seen} == {t.ident}  # all on the caller's thread
    assert [ns for _, ns in seen] == [host, mine] * 5 + [mine]
