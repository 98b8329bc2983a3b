"""Run by test_rules_cache in a child process that plays the host inside a test namespace
(the host's rules are written here, and a test process must not touch the machine's):

    python -m tests.kernel.host_rules_reads <host namespace> <home>

Prints, as JSON, how many `iptables-save` of the host each phase made.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from pathlib import Path

from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.topology import HostChain
from vpcq.workers.kernel import iptables, netns
from vpcq.workers.kernel.driver import Scope
from vpcq.workers.kernel.kernel import Kernel
from vpcq.workers.kernel.ruleset import Ruleset


async def main(home: Path) -> dict[str, int]:
    saves: list[str] = []
    real_save = iptables.save_here

    def counting_save(where: str = "host") -> str:  # every read, on whichever thread
        saves.append(where)
        return real_save(where)

    iptables.save_here = counting_save
    kernel = Kernel(home / "apps", home / "host-rules.lock")
    chain = HostChain("VPCQ-0000aa", "vq0000aau", ("-i vq0000aau -j DROP",), ())
    second = HostChain("VPCQ-0000bb", "vq0000bbu", ("-i vq0000bbu -j DROP",),
                       ("-s 10.9.0.0/16 -o inet0 -j MASQUERADE",))
    scope = Scope(host_chains=frozenset({chain.chain}))
    counts: dict[str, int] = {}

    async def phase(name: str, work: Awaitable[object]) -> None:
        before = len(saves)
        await work
        counts[name] = len(saves) - before

    other = Kernel(home / "apps", home / "host-rules.lock")  # a second worker of this host
    try:
        await phase("observe", kernel.observe(scope, {}))
        await phase("create the chain", kernel.apply([Step("create", chain)], 0, lambda: None))
        await phase("observe after it", kernel.observe(scope, {}))
        await phase("observe again", kernel.observe(scope, {}))
        await phase("another worker's observe", other.observe(scope, {}))
        await phase("another worker's chain", other.apply([Step("create", second)], 0, lambda: None))
        await phase("observe after that", kernel.observe(scope, {}))
        held = netns.run_in(None, lambda: kernel.host_chains.host.read_here()[1])
        counts["held text is the kernel's"] = int(_layout(held) == _layout(real_save()))
        await phase("delete the chain", kernel.apply([Step("delete", chain)], 0, lambda: None))
        await phase("delete the other", other.apply([Step("delete", second)], 0, lambda: None))
        await phase("observe at the end", kernel.observe(scope, {}))
        counts["tables left"] = len(Ruleset.parse(real_save()).tables)
    finally:
        kernel.close()
        other.close()
    counts["host reads only"] = int(set(saves) == {"host"})
    return counts


def _layout(text: str) -> dict[str, tuple[set[str], dict[str, list[str]]]]:
    """Per table: the user chains declared, and each chain's rules in order (base chains
    with no rules may or may not be listed: iptables-nft makes them as they are used)."""
    return {name: ({d for d in t.decls if " - " in d}, {c: r for c, r in t.rules.items() if r})
            for name, t in Ruleset.parse(text).tables.items()}


if __name__ == "__main__":
    netns.enter(sys.argv[1])
    print(json.dumps(asyncio.run(main(Path(sys.argv[2])))))
