"""Bad input, with figures: the protocol fuzzer (diffusion_lens.fuzz) against a real worker. Every
message gets its answer, the worker never crashes, and a well-behaved client's pongs stay on time. The
test runs 2,000 messages (7 to 40 s on 2 cores); `python -m diffusion_lens.fuzz --messages 10000`
runs the full figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack

from diffusion_lens import fuzz, protocol, server

PYTHON_DIR = Path(__file__).resolve().parents[1]


def test_the_fuzzer_covers_every_request_type_and_field():
    schemas = fuzz.Schemas()
    for kind, schema in protocol.SCHEMA["requests"].items():
        paths = {path for path, _, _ in schemas.fields[kind]}
        assert {(name,) for name in schema["properties"]} <= paths, kind
    generate = {path for path, _, _ in schemas.fields["generate"]}
    assert ("items", 0, "seed") in generate and ("stage2", "height") in generate
    assert ("mix", "layers", 1) in generate and ("embeds", "sha256") in generate
    score = {path for path, _, _ in schemas.fields["score"]}
    assert ("items", 0, "questions", 0, "contrast", 0) in score
    # Every field has wrong values to send, and the valid samples are valid.
    for kind, fields in schemas.fields.items():
        for path, schema, _ in fields:
            assert schemas.wrong_values(schema), (kind, path)
    for kind, schema in protocol.SCHEMA["requests"].items():
        assert protocol.decode(fuzz.pack(fuzz.sample(schema)))["type"] == kind


def test_a_message_that_stops_the_checker_is_answered_and_the_checker_restarts():
    checker = server.Checker()
    try:
        frame = msgpack.packb({"v": 1, "id": "big", "type": "ping", "blob": "x" * 100_000})
        message, problem = checker.decode(frame)
        assert message is None and problem is not None
        assert problem["id"] == "big" and problem["message"] == "ping: unknown field 'blob'"
        checker._process.kill()  # what the OOM killer does to a memory bomb
        checker._process.join()
        message, problem = checker.decode(frame)
        assert problem is not None and problem["code"] == "bad_message"
        assert "cannot be checked: it stopped the checker" in problem["message"]
        valid = msgpack.packb({"v": 1, "id": "ok", "type": "hello", "protocol": 1, "client": "y" * 100_000})
        message, problem = checker.decode(valid)
        assert problem is None and message is not None and message["id"] == "ok"
    finally:
        checker.close()


def test_fuzzed_messages_get_answers_and_stall_no_one(sd_dir):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffusion_lens.fuzz",
            "--messages",
            "2000",
            "--seed",
            "1",
            "--model",
            str(sd_dir),
        ],
        cwd=PYTHON_DIR,
        env={**os.environ, "PYTHONPATH": str(PYTHON_DIR)},
        capture_output=True,
        timeout=600,
    )
    figures = json.loads(process.stdout.decode().splitlines()[0])
    summary = process.stderr.decode()
    assert process.returncode == 0 and figures["ok"], summary
    assert figures["messages"] == 2000
    kinds = {
        "random_bytes", "random_msgpack", "random_map", "wrong_type", "missing_field", "unknown_field",
        "wrong_version", "huge", "duplicate_id", "valid", "model_cannot_serve", "bad_load",
    }  # fmt: skip
    assert set(figures["sent_by_kind"]) == kinds
    assert figures["unanswered"] == 0 and figures["without_readable_id"]["unanswered"] == 0
    assert figures["worker_crashes"] == 0 and figures["worker_exit_code"] == 0
    assert figures["internal_errors"] == 0 and figures["worker_tracebacks_logged"] == 0
    assert figures["model_loaded_part_of_run"] is True
    codes = figures["error_codes"]
    for code in ("bad_message", "version_mismatch", "bad_request", "not_loaded", "load_failed"):
        assert codes.get(code, 0) > 0, code
    assert figures["duplicate_ids_refused"] > 0
    good = figures["good_client"]
    # Pinging every 75 ms from its own process, started beside the run: how many pings fit depends on how
    # fast the run goes (2,000 messages took 40 s on one machine, 7 s on another); 20 is enough to judge.
    assert good["pongs"] == good["pings"] > 20 and good["pongs_over_1s_late"] == 0
    assert good["longest_gap_between_pongs_ms"] < 1000
    assert figures["slow_reader"]["dropped"] is True and figures["clients_dropped"] == 1
