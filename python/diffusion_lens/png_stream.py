"""PNG encoding off the compute thread: a request's images are encoded on a small thread pool (Pillow's
encoder releases the GIL) while the compute thread samples the next batch.

Messages are still sent from the compute thread only (the server's socket belongs to it): ``send_ready``,
called at every denoising step and after every batch, sends the image messages whose PNG is done, in the
order the images were made; ``finish`` waits for the rest and sends them. A request's ``done`` or ``error``
is sent after ``finish``, so it follows every image the request made, a cancelled or failed one's too.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .images import png_bytes

# Threads encoding PNGs: a few keep up with any GPU's images (an image takes milliseconds to encode).
PNG_THREADS = 2

Message = dict[str, Any]


def png_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=PNG_THREADS, thread_name_prefix="png")


def _encode(image: np.ndarray) -> tuple[bytes, tuple[float, float]]:
    """The PNG and when its encoding ran (perf_counter seconds)."""
    started = time.perf_counter()
    png = png_bytes(image)
    return png, (started, time.perf_counter())


def busy_ms(intervals: list[tuple[float, float]]) -> float:
    """Milliseconds during which at least one of ``intervals`` ran (overlaps counted once)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total * 1000


class PngStream:
    """One request's images: ``submit`` one with its message (all fields but ``png``), then ``send_ready``
    and ``finish`` as the module says. ``png_ms`` is the wall time during which its PNGs were being
    encoded (on any of the threads; within the request's time, beside the compute thread's work)."""

    def __init__(self, pool: Executor, send: Callable[[Message], None]) -> None:
        self._pool = pool
        self._send = send
        self._pending: deque[tuple[Future[tuple[bytes, tuple[float, float]]], Message]] = deque()
        self._lock = threading.Lock()  # send_ready and finish may meet (a step callback, then the end)
        self._encoding: list[tuple[float, float]] = []

    @property
    def png_ms(self) -> float:
        return busy_ms(self._encoding)

    def submit(self, image: np.ndarray, message: Message) -> None:
        self._pending.append((self._pool.submit(_encode, image), message))

    def send_ready(self) -> None:
        """Sends, in order, the images whose PNG is done, up to the first that is not; never waits."""
        with self._lock:
            while self._pending and self._pending[0][0].done():
                self._send_first()

    def finish(self) -> None:
        """Waits for every image's PNG and sends the rest; raises what an encoding raised (after sending
        the images before it)."""
        with self._lock:
            while self._pending:
                self._send_first()

    def abandon(self) -> None:
        """``finish`` for a request that is failing already: sends what can be sent; an encoding error stops
        it quietly (the request's own error is the one to report)."""
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - the request's own error wins
            self._pending.clear()

    def _send_first(self) -> None:
        future, message = self._pending[0]
        png, ran = future.result()
        self._pending.popleft()
        self._encoding.append(ran)
        self._send({**message, "png": png})
