"""A shared Redis example database: a failure one fuzzing worker finds, another replays first.

The test starts its own redis-server on 127.0.0.1 (free port, no persistence) and stops it.
Worker processes run the campaign against a core with an injected fault (an unknown PDU type
"crashes" it) through Hypothesis' own RedisExampleDatabase (``--database redis://``): the
first finds and stores the failure, the second, replaying only the shared database, starts
with it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from peers import free_port, require

from netdicom2.fuzz.cli import make_database

WORKER = """
import json, sys
from netdicom2.fuzz.campaign import run_campaign
from netdicom2.fuzz.check import Judgement
from netdicom2.fuzz.cli import make_database
from netdicom2.fuzz.targets import LocalTarget

class Faulty(LocalTarget):
    def run(self, case):
        result = super().run(case)
        if any(label == "unknown:pdu-type" for label, _ in case.pdus):
            result.judgement = Judgement("failure", "injected", labels=result.judgement.labels)
        return result

database, examples, replay_only = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "replay"
stats = run_campaign(Faulty(), max_examples=examples, database=make_database(database),
                     replay_only=replay_only)
print(json.dumps({"examples": stats.examples,
                  "first": [f.first_example for f in stats.findings.values()]}))
"""


@pytest.fixture
def redis_url() -> Iterator[str]:
    """redis-server on a free 127.0.0.1 port, without persistence; stopped afterwards."""
    binary = require("redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 10
            log = b""
            while b"Ready to accept connections" not in log:
                left = deadline - time.monotonic()
                if left <= 0 or process.poll() is not None:
                    raise AssertionError(f"redis-server did not start: {log.decode()}")
                if selector.select(left):
                    log += os.read(process.stdout.fileno(), 4096)  # unbuffered: see select
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def _worker(database: str, examples: int, mode: str) -> dict[str, list[int] | int]:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, database, str(examples), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, list[int] | int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_make_database_understands_redis_urls(redis_url: str) -> None:
    from hypothesis.extra.redis import RedisExampleDatabase

    database = make_database(redis_url)
    assert isinstance(database, RedisExampleDatabase)
    database.save(b"k", b"v")
    assert list(database.fetch(b"k")) == [b"v"]


def test_a_failure_found_by_one_worker_is_replayed_first_by_another(redis_url: str) -> None:
    assert _worker(redis_url, 1, "replay")["examples"] == 0  # an empty shared database
    finder = _worker(redis_url, 300, "fuzz")
    assert finder["first"], "worker 1 did not find the injected fault"
    replayer = _worker(redis_url, 1, "replay")  # another process: only the shared database
    assert replayer["examples"] >= 1
    assert replayer["first"] == [1], "worker 2 did not start with worker 1's failure"
