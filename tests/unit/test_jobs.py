"""The job payloads the CLI writes without arq are the ones arq writes and reads."""

from __future__ import annotations

import pytest
from arq import constants
from arq.jobs import deserialize_job, serialize_job

from vpcq.events import jobs


def test_the_keys_and_expiry_are_arqs():
    assert constants.job_key_prefix == jobs.JOB_KEY_PREFIX
    assert constants.result_key_prefix == jobs.RESULT_KEY_PREFIX
    assert constants.expires_extra_ms == jobs.EXPIRES_EXTRA_MS


def test_a_payload_is_what_arqs_serialize_job_makes_and_reads_back():
    mine = jobs.job_payload(jobs.APPLY, ("a", True), 1234)
    assert mine == serialize_job(jobs.APPLY, ("a", True), {}, None, 1234, serializer=jobs.job_dumps)
    job = deserialize_job(mine, deserializer=jobs.job_loads)
    assert (job.function, job.args, job.kwargs, job.job_try) == (jobs.APPLY, ["a", True], {}, None)
    assert job.enqueue_time.timestamp() == 1.234


def test_an_answer_reads_back_as_written_and_prints_as_the_local_run_does():
    a = jobs.Answer([("create", "netns a-web"), ("delete", "addr 10.0.1.77/24 on vb-0a1b2c")])
    back = jobs.load_answer(jobs.dump_answer(a))
    assert back == a
    assert back.report("drift", False) == (["netns a-web", "addr 10.0.1.77/24 on vb-0a1b2c"], 1)
    assert jobs.Answer([]).report("drift", False) == (["no drift: the kernel matches the log"], 0)
    assert jobs.Answer([]).report("drift", True) == ([], 0)
    assert back.report("repair", True) == (
        ['{"op": "create", "object": "netns a-web"}',
         '{"op": "delete", "object": "addr 10.0.1.77/24 on vb-0a1b2c"}'], 0)
    assert back.report("repair", False)[0][-1] == "repaired: 2 step(s)"
    err = jobs.Answer([], "vpc: 'x/y' is not a valid name", 2)
    assert jobs.load_answer(jobs.dump_answer(err)) == err


@pytest.mark.parametrize("raw", [
    b"not json", b"[" * 100_000, b"[]", b'{"steps": []}',
    b'{"steps": [], "error": null, "exit": 0, "more": 1}',
    b'{"steps": [["create", "netns a\\u001b[2J"]], "error": null, "exit": 0}',  # an escape
    b'{"steps": [["create", "line\\nforged line"]], "error": null, "exit": 0}',
    b'{"steps": [["create", "\\u202eevil"]], "error": null, "exit": 0}',  # a bidi override
    b'{"steps": [["create"]], "error": null, "exit": 0}',
    b'{"steps": [["create", 7]], "error": null, "exit": 0}',
    b'{"steps": [["create", ""]], "error": null, "exit": 0}',
    b'{"steps": "create", "error": null, "exit": 0}',
    b'{"steps": [], "error": "boom\\r", "exit": 3}',
    b'{"steps": [], "error": "boom", "exit": true}',
    b'{"steps": [], "error": "boom", "exit": 9}',
    b'{"steps": [["create", "' + b"x" * 2001 + b'"]], "error": null, "exit": 0}',
])  # fmt: skip
def test_an_answer_a_worker_never_writes_is_refused(raw):
    with pytest.raises(ValueError):
        jobs.load_answer(raw)
