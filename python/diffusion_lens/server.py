"""The worker's I/O side: a ZeroMQ ROUTER loop on the main thread.

Only this thread touches the ROUTER socket. Load, generate and score requests go to the compute thread
(engine.py) through a queue; its messages come back over an inproc PUSH/PULL pair. So pings,
cancels and heartbeats are answered even while a long GPU step runs.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import zmq

from . import PROTOCOL_VERSION, __version__, protocol

log = logging.getLogger("diffusion_lens.server")
OUTBOX = "inproc://diffusion-lens-outbox"
FINAL_TYPES = (
    "loaded",
    "done",
    "score_done",
    "error",
)  # the last message of a load, generate or score request


def default_endpoint() -> tuple[str, str | None]:
    """A private ipc socket (no port, other users cannot connect), or loopback TCP on Windows."""
    if sys.platform == "win32":
        return "tcp://127.0.0.1:*", None
    folder = tempfile.mkdtemp(prefix="dlens-")
    return f"ipc://{folder}/worker.sock", folder


def environment() -> dict[str, Any]:
    """The `ready` fields that describe this worker; imports torch lazily (slow)."""
    from .devices import best_device, library_versions
    from .families import FAMILIES

    return {
        "worker": __version__,
        **library_versions(),
        "device": best_device(),
        "families": [family.capabilities() for family in FAMILIES.values()],
    }


class LensServer:
    def __init__(
        self,
        bind: str | None = None,
        heartbeat_s: float = 1.0,
        watch_stdin: bool = True,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.context = zmq.Context()
        # The router has a context of its own, so that close() can wait for its last replies (bye) to
        # leave without waiting for the compute thread's socket: main() ends the process with os._exit.
        self._router_context = zmq.Context()
        self.router = self._router_context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        # Sending to a peer that has gone raises instead of dropping silently, so we can forget it.
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        requested, self._temp_dir = (bind, None) if bind else default_endpoint()
        self.router.bind(requested)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.outbox = self.context.socket(zmq.PULL)
        self.outbox.bind(OUTBOX)
        self.requests: queue.Queue[protocol.Message | None] = queue.Queue()
        self.routes: dict[str, list[bytes]] = {}  # request id → envelope of the peer that sent it
        self.peers: dict[bytes, list[bytes]] = {}  # peers that said hello (heartbeat targets)
        self.running: str | None = None
        self.stopping = threading.Event()
        self._parent = os.getppid()
        self._environment = environment()  # before announcing, so that hello is answered at once
        from .engine import Engine

        self.engine = Engine(self._emit_from_engine)
        self._engine_thread = threading.Thread(target=self._engine_loop, name="engine", daemon=True)
        if watch_stdin:
            threading.Thread(target=self._watch_stdin, name="stdin-watch", daemon=True).start()

    # --- compute thread -------------------------------------------------------------------------
    def _engine_loop(self) -> None:
        self._push = self.context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(OUTBOX)
        while (request := self.requests.get()) is not None:
            self.running = request["id"]
            self.engine.handle(request)
            self.running = None

    def _emit_from_engine(self, message: protocol.Message) -> None:
        final = b"1" if message["type"] in FINAL_TYPES else b"0"
        self._push.send_multipart([message["id"].encode(), final, protocol.encode(message)])

    # --- I/O thread -----------------------------------------------------------------------------
    def _watch_stdin(self) -> None:
        """The parent holds our stdin open; EOF means it is gone, so we go too (no orphans)."""
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except (OSError, ValueError):
            pass
        log.info("stdin closed: parent gone, shutting down")
        self.stopping.set()

    def announce(self) -> None:
        print(
            json.dumps(
                {
                    "event": "listening",
                    "endpoint": self.endpoint,
                    "pid": os.getpid(),
                    "protocol": PROTOCOL_VERSION,
                }
            ),
            flush=True,
        )

    def _send(self, envelope: list[bytes], message: protocol.Message) -> None:
        self._send_frame(envelope, protocol.encode(message))

    def _send_frame(self, envelope: list[bytes], frame: bytes) -> None:
        try:
            self.router.send_multipart([*envelope, frame])
        except zmq.ZMQError as exc:  # EHOSTUNREACH: that client disconnected
            log.info("dropping a message for a disconnected client (%s)", exc)
            self.peers.pop(envelope[0], None)

    def serve(self) -> None:
        self._engine_thread.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.outbox, zmq.POLLIN)
        next_beat = time.monotonic() + self.heartbeat_s
        try:
            while not self.stopping.is_set():
                timeout_ms = max(0.0, min(next_beat - time.monotonic(), 0.2)) * 1000
                ready = dict(poller.poll(timeout_ms))
                if self.outbox in ready:
                    self._forward_engine_messages()
                if self.router in ready:
                    self._receive()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                    self._heartbeat()
        finally:
            self.close()

    def _forward_engine_messages(self) -> None:
        while True:
            try:
                request_id, final, frame = self.outbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            route = self.routes.pop if final == b"1" else self.routes.get
            envelope = route(request_id.decode(), None)
            if envelope is not None:
                self._send_frame(envelope, frame)

    def _heartbeat(self) -> None:
        if os.getppid() != self._parent:
            log.info("parent process changed: shutting down")
            self.stopping.set()
            return
        beat = protocol.reply("", "heartbeat", busy=self.running is not None)
        for envelope in list(self.peers.values()):
            self._send(envelope, beat)

    def _receive(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, frame = frames[:-1], frames[-1]
            try:
                message = protocol.decode(frame)
            except protocol.ProtocolError as exc:
                self._send(envelope, protocol.error(exc.request_id, exc.code, str(exc)))
                continue
            try:
                self._dispatch(envelope, message)
            except Exception as exc:
                log.exception("request %s failed", message.get("id"))
                self._send(
                    envelope,
                    protocol.error(message["id"], "internal", str(exc), traceback.format_exc()),
                )

    def _dispatch(self, envelope: list[bytes], message: protocol.Message) -> None:
        request_id, kind = message["id"], message["type"]
        if kind == "hello":
            if message["protocol"] != PROTOCOL_VERSION:
                self._send(
                    envelope,
                    protocol.error(
                        request_id,
                        "version_mismatch",
                        f"client speaks protocol v{message['protocol']}, this worker v{PROTOCOL_VERSION}",
                    ),
                )
                return
            self.peers[envelope[0]] = envelope
            fields = {
                "protocol": PROTOCOL_VERSION,
                "heartbeat_s": self.heartbeat_s,
                **self._environment,
            }
            self._send(envelope, protocol.reply(request_id, "ready", **fields))
        elif kind == "ping":
            self._send(
                envelope,
                protocol.reply(request_id, "pong", busy=self.running is not None),
            )
        elif kind == "cancel":
            if message["target"] in self.routes:  # only requests still queued or running
                self.engine.cancel(message["target"])
            self._send(envelope, protocol.reply(request_id, "ack", target=message["target"]))
        elif kind == "shutdown":
            self._send(envelope, protocol.reply(request_id, "bye"))
            self.stopping.set()
        else:  # load, generate, score: the compute thread serves them in order
            self.routes[request_id] = envelope
            self.requests.put(message)

    def close(self) -> None:
        self.router.close(linger=1000)
        self._router_context.term()  # returns once the queued replies are sent (1 s at most)
        self.outbox.close(linger=0)
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
