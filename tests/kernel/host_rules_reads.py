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
from vpcq.workers.kernel.adapter import Kernel, Scope


async def main(home: Path) -> dict[str, int]:
    saves: list[str] = []
    real_save = iptables.save_here

    def counting_save(where: str = "host") -> str:  # every read, on whichever thread
        saves.append(where)
        return real_save(where)

    iptables.save_here = counting_save
    kernel = Kernel(home / "apps", home / "host-rules.lock")
    chain = HostChain("VPCQ-0000aa", "vq0000aau", ("-i vq0000aau -j DROP",), ())
    scope = Scope(host_chains={chain.chain})
    counts: dict[str, int] = {}

    async def phase(name: str, work: Awaitable[object]) -> None:
        before = len(saves)
        await work
        counts[name] = len(saves) - before

    try:
        await phase("observe", kernel.observe(scope, {}))
        await phase("create the chain", kernel.apply(Step("create", chain)))
        await phase("observe after it", kernel.observe(scope, {}))
        await phase("observe again", kernel.observe(scope, {}))
        await phase("delete the chain", kernel.apply(Step("delete", chain)))
    finally:
        kernel.close()
    counts["host reads only"] = int(set(saves) == {"host"})
    return counts


if __name__ == "__main__":
    netns.enter(sys.argv[1])
    print(json.dumps(asyncio.run(main(Path(sys.argv[2])))))
