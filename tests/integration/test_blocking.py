"""The CLI's blocking Redis client on a real redis-server: replies shaped as redis-py's,
errors as one line, and CLI commands that load neither asyncio nor redis-py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import run_cli
from vpcq.errors import ConfigError
from vpcq.events.blocking import BlockingRedis, ReplyError, drive


def test_replies_have_redis_pys_shapes(redis_url):
    r = BlockingRedis.connect(redis_url)
    try:
        r.call("XADD", "s", "1-0", "f", "v", "g", "w")
        r.call("XADD", "s", "2-0", "f", "x")
        assert drive(r.xrange("s")) == [(b"1-0", {b"f": b"v", b"g": b"w"}), (b"2-0", {b"f": b"x"})]
        assert drive(r.xrevrange("s", count=1)) == [(b"2-0", {b"f": b"x"})]
        assert drive(r.xread({"s": "1-0"}, count=10)) == [[b"s", [(b"2-0", {b"f": b"x"})]]]
        assert drive(r.xread({"s": "2-0"}, block=50)) == []  # nothing came within the block
        assert drive(r.hset("h", mapping={"a": "1", "b": "2"})) == 2
        assert drive(r.hmget("h", ["a", "z"])) == [b"1", None]
        pipe = r.pipeline(transaction=False)
        pipe.get("nothing").hget("h", "b").set("k", "v")
        assert drive(pipe.execute()) == [None, b"2", True]
        assert drive(r.pubsub_numsub("chan")) == [(b"chan", 0)]
        script = r.register_script("return redis.error_reply('VERSION_CONFLICT ' .. ARGV[1])")
        with pytest.raises(ReplyError, match=r"^VERSION_CONFLICT 7$"):
            drive(script(keys=[], args=[7]))
        assert drive(r.ping())  # the connection is still good after an error reply
    finally:
        drive(r.aclose())


def test_a_coroutine_that_waits_on_an_event_loop_is_refused():
    async def waits():
        import asyncio

        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="without an event loop"):
        drive(waits())


def test_no_server_or_a_refused_password_is_one_config_error(redis_url, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot reach Redis at unix://\S+none.sock"):
        BlockingRedis.connect(f"unix://{tmp_path}/none.sock")
    assert "password" not in redis_url  # the test server has none: AUTH is refused
    sep = "&" if "?" in redis_url else "?"
    with pytest.raises(ConfigError, match=r"refused: .*AUTH") as e:
        BlockingRedis.connect(f"{redis_url}{sep}password=s3cret")
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("argv", [["list"], ["log"], ["create-vpc", "a", "10.0.0.0/16", "--no-wait"],
                                  ["status", "nope"]])
def test_cli_reads_and_submits_load_no_asyncio_redis_py_or_arq(argv, redis_url, home):
    code = (
        "import sys\n"
        "from vpcq.cli.main import main\n"
        f"main({argv!r})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'asyncio', 'redis', 'arq', 'structlog'}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)})
    assert p.stdout.strip().splitlines()[-1] == "[]", (p.stdout, p.stderr)


def test_a_command_waits_and_reports_on_the_blocking_client(redis_url, home):
    env = {"VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)}
    p = run_cli(["create-vpc", "a", "10.0.0.0/16", "--timeout", "0.5"], env)
    assert p.returncode == 4 and "not applied after" in p.stderr, p.stderr
