#!/usr/bin/env python
"""Entry point of the diffusion-lens worker. Started by the orchestrator (src/bridge), or by hand on a
GPU host: `python lens_server.py --bind tcp://0.0.0.0:5555 --no-stdin-watch`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from diffusion_lens.server import LensServer


def main() -> None:
    parser = argparse.ArgumentParser(description="diffusion-lens worker (protocol v1 over ZeroMQ)")
    parser.add_argument("--bind", help="ZeroMQ endpoint to bind (default: a private ipc socket)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument(
        "--no-stdin-watch",
        action="store_true",
        help="do not exit when stdin closes (for detached workers)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[worker] %(levelname)s %(message)s",
    )
    server = LensServer(args.bind, heartbeat_s=args.heartbeat, watch_stdin=not args.no_stdin_watch)
    # SIGTERM: leave the loop so the socket's private folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stopping.set())
    server.announce()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()
    # The compute thread may be inside a long torch call; don't wait for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
