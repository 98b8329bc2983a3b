"""The job payloads the CLI writes without arq are the ones arq writes and reads."""

from __future__ import annotations

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
