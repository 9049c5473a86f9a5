#!/usr/bin/env python
"""Entry point of the diffusion-lens worker. Started by the orchestrator (src/bridge), or by hand on a
GPU host: `python lens_server.py --bind tcp://0.0.0.0:5555 --keys DIR --no-stdin-watch`.

Exit codes: 0 after shutdown, stdin EOF or SIGTERM/SIGINT; 2 for bad arguments (a network bind without
--keys or --insecure, unusable keys, a bad --load); 3 when the --load model fails to load."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any, NoReturn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from diffusion_lens import protocol
from diffusion_lens.server import STARTUP, bind_problem

log = logging.getLogger("diffusion_lens.server")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_load(text: str) -> dict[str, Any]:
    """``--load``'s JSON: the fields of a load request (the envelope v/id/type is added), checked with the
    protocol's own validator."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--load is not JSON ({exc})")
    if not isinstance(fields, dict):
        fail("--load must be a JSON object with the fields of a load request (model, family, dtype, ...)")
    for name in ("v", "id", "type"):
        if name in fields:
            fail(f"--load: field '{name}' is not a load field (the worker adds v, id and type)")
    message = {"v": protocol.PROTOCOL_VERSION, "id": STARTUP, "type": "load", **fields}
    problem = protocol.first_problem(protocol.validator(protocol.SCHEMA["requests"]["load"]), message)
    if problem is not None:
        fail(f"--load: {problem}")
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description="diffusion-lens worker (protocol v1 over ZeroMQ)")
    parser.add_argument("--bind", help="ZeroMQ endpoint to bind (default: a private ipc socket)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument(
        "--no-stdin-watch",
        action="store_true",
        help="do not exit when stdin closes (for detached workers)",
    )
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="serve CURVE with DIR/worker.key_secret and accept only the clients in DIR/authorized "
        "(made by `diffusion-lens keys DIR`)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a network --bind without --keys: anyone who can reach the port can use the worker",
    )
    parser.add_argument(
        "--load",
        metavar="JSON",
        help="load this model (a JSON object with the fields of a load request) before serving anyone",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[worker] %(levelname)s %(message)s",
    )
    problem = bind_problem(args.bind, keys=args.keys is not None, insecure=args.insecure)
    if problem is not None:
        fail(problem)
    preload = None if args.load is None else parse_load(args.load)
    keys = None
    if args.keys is not None:
        from diffusion_lens.auth import KeysError, load_worker_keys

        try:
            keys = load_worker_keys(args.keys)
        except KeysError as exc:
            fail(str(exc))
    elif args.insecure and bind_problem(args.bind, keys=False, insecure=False) is not None:
        log.warning(
            "listening on %s without authentication (--insecure): anyone who can reach this port can use "
            "this worker (run models, read the files it can read); use --keys DIR for remote use",
            args.bind,
        )

    import zmq

    from diffusion_lens.server import LensServer

    try:
        server = LensServer(
            args.bind,
            heartbeat_s=args.heartbeat,
            watch_stdin=not args.no_stdin_watch,
            keys=keys,
            preload=preload,
        )
    except zmq.ZMQError as exc:
        fail(f"cannot bind {args.bind}: {exc}")
    if keys is not None:
        log.info("CURVE on: %d authorized client certificate(s) in %s", keys.clients, keys.authorized)
    # SIGTERM: leave the loop so the socket's private folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stopping.set())
    server.announce()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()
    # The compute thread may be inside a long torch call; don't wait for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(server.exit_code)


if __name__ == "__main__":
    main()
