"""The worker's I/O side: a ZeroMQ ROUTER loop on the main thread.

Only this thread touches the ROUTER socket. Load, generate and score requests go to the compute thread
(engine.py) through a queue; its messages come back over an inproc PUSH/PULL pair. So pings,
cancels and heartbeats are answered even while a long GPU step runs.

Several clients may share the worker, and none can stall the others:

- every send is non-blocking, into a bounded queue per client (``SEND_QUEUE`` messages); a client whose
  queue is full does not read its replies and is dropped: no more heartbeats, its requests cancelled,
  whatever it sends afterwards ignored;
- each loop iteration takes a bounded amount of work (``RECEIVE_BATCH`` incoming frames or
  ``BATCH_SECONDS``, ``FORWARD_BATCH`` engine messages), so heartbeats and pongs leave on time under a
  flood;
- a large frame (over ``INLINE_BYTES``), whose schema check can take seconds (100,000 items), is
  checked by a helper process (the checker), so that the check holds neither this thread nor the GIL; a
  decoder thread waits for it. The client's later frames follow it there, so its messages are still
  served in order. A message that kills the checker (one whose decoded size exhausts memory) is answered
  ``bad_message`` and the checker restarts;
- request ids are the client's own: routes are keyed by (client, id), so two clients may both use "r1".
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from . import PROTOCOL_VERSION, __version__, protocol

if TYPE_CHECKING:
    from .auth import WorkerKeys

log = logging.getLogger("diffusion_lens.server")
OUTBOX = "inproc://diffusion-lens-outbox"
DECODED = "inproc://diffusion-lens-decoded"
FINAL_TYPES = (
    "loaded",
    "done",
    "score_done",
    "error",
)  # the last message of a load, generate or score request

# Messages queued for one client before it counts as a client that does not read (ZMQ_SNDHWM of the
# router's pipe to it; its own receive queue and the kernel's buffers hold more before that).
SEND_QUEUE = 1000
# The largest message the worker takes (ZMQ_MAXMSGSIZE): a score request carries PNGs. libzmq closes the
# connection of a peer that sends a larger one.
MAX_MESSAGE_BYTES = 512 * 2**20
# Work per loop iteration, so that heartbeats and pongs leave on time whatever one client sends.
RECEIVE_BATCH = 100
FORWARD_BATCH = 100
BATCH_SECONDS = 0.05
# Frames larger than this are decoded and checked on the decoder thread.
INLINE_BYTES = 16 * 1024
# Dropped clients remembered (what they send afterwards is ignored).
MAX_DROPPED = 4096
# The peer identity of the --load request, which no client sent.
STARTUP = "--load"


def default_endpoint() -> tuple[str, str | None]:
    """A private ipc socket (no port, other users cannot connect), or loopback TCP on Windows."""
    if sys.platform == "win32":
        return "tcp://127.0.0.1:*", None
    folder = tempfile.mkdtemp(prefix="dlens-")
    return f"ipc://{folder}/worker.sock", folder


def bind_problem(bind: str | None, keys: bool, insecure: bool) -> str | None:
    """Why the worker must not listen on ``bind`` as asked, or None: a network endpoint needs CURVE keys,
    or ``--insecure`` said out loud."""
    if bind is None or keys or insecure or bind.startswith(("ipc://", "inproc://")):
        return None
    return (
        f"--bind {bind} listens on the network without authentication: pass --keys DIR (make the keys "
        f"with `diffusion-lens keys DIR`), or --insecure to let anyone who can reach the port use this worker"
    )


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


@dataclass(frozen=True)
class Route:
    """A load, generate or score request that is queued or running: who sent it, its own id."""

    peer: bytes
    request_id: str
    kind: str


@dataclass(frozen=True)
class Job:
    key: str  # unique across clients: the engine's name of the request (cancel, routing)
    peer: bytes
    message: protocol.Message


Decoded = tuple[protocol.Message | None, protocol.Message | None]  # (request, or the error reply)


def request_key(peer: bytes, request_id: str) -> str:
    return f"{peer.hex()}:{request_id}"


def _readable_id(frame: bytes) -> str:
    """The frame's string id when it has one (for an error reply), else ""."""
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - garbage
        return ""
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, str) else ""


def check_frames(connection: Any) -> None:
    """The checker process: for each frame it is sent, b"" when the frame is a valid request, else the
    error reply it gets (msgpack: no pickle between the processes either)."""
    while True:
        try:
            frame = connection.recv_bytes()
        except (EOFError, OSError):  # the worker has gone
            return
        problem = decode(frame)[1]
        connection.send_bytes(b"" if problem is None else protocol.encode(problem))


class Checker:
    """Checks large frames in the checker process (started on first use, restarted when it dies)."""

    def __init__(self) -> None:
        self._process: Any = None
        self._connection: Any = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._process = context.Process(target=check_frames, args=(theirs,), name="checker", daemon=True)
        self._process.start()
        theirs.close()
        self._connection = ours

    def decode(self, frame: bytes) -> Decoded:
        try:
            if self._process is None:
                self._start()
            self._connection.send_bytes(frame)
            answer = self._connection.recv_bytes()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode if self._process is not None else None
            self.close()
            log.warning(
                "the message checker died (%s, exit code %s); it restarts with the next frame", exc, code
            )
            return None, protocol.error(
                "", "bad_message", f"message of {len(frame)} bytes cannot be checked: it stopped the checker"
            )
        if answer:
            return None, msgpack.unpackb(answer, raw=False)
        return msgpack.unpackb(frame, raw=False, strict_map_key=False), None

    def close(self) -> None:
        if self._process is not None:
            self._connection.close()
            self._process.kill()
            self._process.join(5)
        self._process = self._connection = None


def decode(frame: bytes) -> Decoded:
    """The request in ``frame``, or the error reply it gets; never raises."""
    try:
        return protocol.decode(frame), None
    except protocol.ProtocolError as exc:
        return None, protocol.error(exc.request_id, exc.code, str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: still an answer
        return None, protocol.error(
            _readable_id(frame), "bad_message", f"message cannot be checked ({type(exc).__name__}: {exc})"
        )


class LensServer:
    def __init__(
        self,
        bind: str | None = None,
        heartbeat_s: float = 1.0,
        watch_stdin: bool = True,
        keys: WorkerKeys | None = None,
        preload: dict[str, Any] | None = None,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.exit_code = 0
        self.context = zmq.Context()
        # The router has a context of its own, so that close() can wait for its last replies (bye) to
        # leave without waiting for the compute thread's socket: main() ends the process with os._exit.
        self._router_context = zmq.Context()
        self.router = self._router_context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        # Sending to a peer that has gone raises (EHOSTUNREACH) instead of dropping silently, and with
        # NOBLOCK a full queue raises zmq.Again instead of blocking every other client.
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, SEND_QUEUE)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._authenticator = None
        if keys is not None:
            from .auth import serve_curve, start_authenticator

            self._authenticator = start_authenticator(self._router_context, keys)
            serve_curve(self.router, keys)
        requested, self._temp_dir = (bind, None) if bind else default_endpoint()
        try:
            self.router.bind(requested)
        except zmq.ZMQError:
            self._close_router()
            raise
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.outbox = self.context.socket(zmq.PULL)
        self.outbox.bind(OUTBOX)
        self._woken = self.context.socket(zmq.PULL)
        self._woken.bind(DECODED)
        self.requests: queue.Queue[Job | None] = queue.Queue()
        self.routes: dict[str, Route] = {}  # request key → the request, while queued or running
        self.peers: dict[bytes, bool] = {}  # peers that said hello (heartbeat targets)
        self.dropped: OrderedDict[bytes, bool] = OrderedDict()  # peers that did not read their replies
        self.running: str | None = None  # the key of the request the compute thread serves
        self._serving: str | None = None
        self._preload = preload
        # Large frames go to the decoder thread; a peer with frames there sends the rest after them.
        self._to_decode: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()
        self._decoded: queue.Queue[tuple[bytes, Decoded]] = queue.Queue()
        self._decoding: dict[bytes, int] = {}
        self.stopping = threading.Event()
        self._parent = os.getppid()
        self._environment = environment()  # before announcing, so that hello is answered at once
        from .engine import Engine

        self.engine = Engine(self._emit_from_engine)
        self._engine_thread = threading.Thread(target=self._engine_loop, name="engine", daemon=True)
        self._decoder_thread = threading.Thread(target=self._decode_loop, name="decoder", daemon=True)
        if watch_stdin:
            threading.Thread(target=self._watch_stdin, name="stdin-watch", daemon=True).start()

    # --- compute thread -------------------------------------------------------------------------
    def _engine_loop(self) -> None:
        self._push = self.context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(OUTBOX)
        if self._preload is not None and not self._load_at_start(self._preload):
            return
        while (job := self.requests.get()) is not None:
            self.running = self._serving = job.key
            self.engine.handle(job.message, key=job.key, client=job.peer)
            self.running = self._serving = None

    def _load_at_start(self, fields: dict[str, Any]) -> bool:
        """``--load``: the model loaded before any client's request is served, and one stdout line saying
        so. A failure ends the worker (exit code 3)."""
        from .families import CheckpointError

        self.running = STARTUP
        try:
            loaded = self.engine.load_model(fields)
        except Exception as exc:  # noqa: BLE001 - reported on stdout, then the worker exits
            if isinstance(exc, CheckpointError):
                message = str(exc)
            else:
                message = f"{type(exc).__name__}: {exc}"
                log.error("--load %s failed:\n%s", fields.get("model"), traceback.format_exc())
            print(json.dumps({"event": "load_failed", "message": message}), flush=True)
            self.exit_code = 3
            self.stopping.set()
            return False
        finally:
            self.running = None
        event = {
            "event": "loaded",
            "model": loaded["model"],
            "family": loaded["family"],
            "num_layers": loaded["num_layers"],
        }
        print(json.dumps(event), flush=True)
        return True

    def _emit_from_engine(self, message: protocol.Message) -> None:
        final = b"1" if message["type"] in FINAL_TYPES else b"0"
        key = (self._serving or "").encode()
        self._push.send_multipart([key, final, protocol.encode(message)])

    # --- decoder thread -------------------------------------------------------------------------
    def _decode_loop(self) -> None:
        wake = self.context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(DECODED)
        checker = Checker()
        while (item := self._to_decode.get()) is not None:
            peer, frame = item
            # Frames that are still small (a client's frames behind a large one) are decoded here.
            decoded = checker.decode(frame) if len(frame) > INLINE_BYTES else decode(frame)
            self._decoded.put((peer, decoded))
            with contextlib.suppress(zmq.Again):  # it has wake-ups enough queued; it drains all results
                wake.send(b"", zmq.NOBLOCK)

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

    def _send(self, peer: bytes, message: protocol.Message) -> None:
        self._send_frame(peer, protocol.encode(message))

    def _send_frame(self, peer: bytes, frame: bytes) -> None:
        try:
            self.router.send_multipart([peer, frame], zmq.NOBLOCK)
        except zmq.Again:  # its queue is full: a client that does not read
            self._drop(peer)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._forget_peer(peer, "has disconnected", logging.INFO)
            else:
                log.warning("cannot send to client %s: %s", peer.hex(), exc)

    def _drop(self, peer: bytes) -> None:
        self.dropped[peer] = True
        while len(self.dropped) > MAX_DROPPED:
            self.dropped.popitem(last=False)
        self._forget_peer(
            peer, f"does not read its replies ({SEND_QUEUE} messages queued for it): dropped", logging.WARNING
        )

    def _forget_peer(self, peer: bytes, why: str, level: int) -> None:
        """No more heartbeats to ``peer``, its queued and running requests cancelled, its routes and its
        load forgotten; one log line."""
        self.peers.pop(peer, None)
        keys = [key for key, route in self.routes.items() if route.peer == peer]
        for key in keys:
            self.engine.cancel(key)
            del self.routes[key]
        self.engine.forget_client(peer)
        log.log(level, "client %s %s; %d of its requests cancelled", peer.hex(), why, len(keys))

    def serve(self) -> None:
        self._engine_thread.start()
        self._decoder_thread.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.outbox, zmq.POLLIN)
        poller.register(self._woken, zmq.POLLIN)
        next_beat = time.monotonic() + self.heartbeat_s
        try:
            while not self.stopping.is_set():
                idle = self._decoded.empty()
                timeout_ms = max(0.0, min(next_beat - time.monotonic(), 0.2)) * 1000 if idle else 0
                ready = dict(poller.poll(timeout_ms))
                if self.outbox in ready:
                    self._forward_engine_messages()
                if self.router in ready:
                    self._receive()
                if self._woken in ready:
                    self._drain_wake_ups()
                if not self._decoded.empty():
                    self._take_decoded()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                    self._heartbeat()
        finally:
            self.close()

    def _forward_engine_messages(self) -> None:
        for _ in range(FORWARD_BATCH):
            try:
                key_bytes, final, frame = self.outbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            key = key_bytes.decode()
            if final == b"1":
                route = self.routes.pop(key, None)
                self.engine.forget_cancel(key)
            else:
                route = self.routes.get(key)
            if route is not None:  # else its client was dropped or has gone
                self._send_frame(route.peer, frame)

    def _heartbeat(self) -> None:
        if os.getppid() != self._parent:
            log.info("parent process changed: shutting down")
            self.stopping.set()
            return
        beat = protocol.encode(protocol.reply("", "heartbeat", busy=self.running is not None))
        for peer in list(self.peers):
            self._send_frame(peer, beat)

    def _receive(self) -> None:
        deadline = time.monotonic() + BATCH_SECONDS
        for _ in range(RECEIVE_BATCH):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            peer = frames[0]
            if peer in self.dropped:
                continue
            if len(frames) != 2:
                count = len(frames) - 1
                self._send(
                    peer, protocol.error("", "bad_message", f"a message is one frame; this one had {count}")
                )
            elif peer in self._decoding or len(frames[1]) > INLINE_BYTES:
                self._decoding[peer] = self._decoding.get(peer, 0) + 1
                self._to_decode.put((peer, frames[1]))
            else:
                self._handle(peer, decode(frames[1]))
            if time.monotonic() > deadline:
                return

    def _drain_wake_ups(self) -> None:
        while True:
            try:
                self._woken.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _take_decoded(self) -> None:
        for _ in range(RECEIVE_BATCH):
            try:
                peer, decoded = self._decoded.get_nowait()
            except queue.Empty:
                return
            left = self._decoding.get(peer, 1) - 1
            if left > 0:
                self._decoding[peer] = left
            else:
                self._decoding.pop(peer, None)
            if peer not in self.dropped:
                self._handle(peer, decoded)

    def _handle(self, peer: bytes, decoded: Decoded) -> None:
        message, problem = decoded
        if problem is not None or message is None:
            assert problem is not None
            self._send(peer, problem)
            return
        try:
            self._dispatch(peer, message)
        except Exception as exc:
            log.exception("request %s failed", message.get("id"))
            self._send(peer, protocol.error(message["id"], "internal", str(exc), traceback.format_exc()))

    def _dispatch(self, peer: bytes, message: protocol.Message) -> None:
        request_id, kind = message["id"], message["type"]
        if kind == "hello":
            if message["protocol"] != PROTOCOL_VERSION:
                self._send(
                    peer,
                    protocol.error(
                        request_id,
                        "version_mismatch",
                        f"client speaks protocol v{message['protocol']}, this worker v{PROTOCOL_VERSION}",
                    ),
                )
                return
            self.peers[peer] = True
            fields = {
                "protocol": PROTOCOL_VERSION,
                "heartbeat_s": self.heartbeat_s,
                **self._environment,
            }
            self._send(peer, protocol.reply(request_id, "ready", **fields))
        elif kind == "ping":
            self._send(peer, protocol.reply(request_id, "pong", busy=self.running is not None))
        elif kind == "cancel":
            key = request_key(peer, message["target"])
            if key in self.routes:  # only this client's requests still queued or running
                self.engine.cancel(key)
            self._send(peer, protocol.reply(request_id, "ack", target=message["target"]))
        elif kind == "shutdown":
            self._send(peer, protocol.reply(request_id, "bye"))
            self.stopping.set()
        else:  # load, generate, score: the compute thread serves them in order
            key = request_key(peer, request_id)
            route = self.routes.get(key)
            if route is not None:
                state = "running" if self.running == key else "queued"
                self._send(
                    peer,
                    protocol.error(
                        request_id,
                        "bad_request",
                        f"request id {request_id!r} is already in use by a {state} {route.kind} request",
                    ),
                )
                return
            self.routes[key] = Route(peer, request_id, kind)
            self.requests.put(Job(key, peer, message))

    def _close_router(self) -> None:
        self.router.close(linger=1000)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._router_context.term()  # returns once the queued replies are sent (1 s at most)

    def close(self) -> None:
        self._close_router()
        self.outbox.close(linger=0)
        self._woken.close(linger=0)
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
