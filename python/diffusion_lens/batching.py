"""How many items the worker samples in one batch of the denoiser: a generate request's ``max_batch``,
an integer, or ``"auto"``, which the worker resolves per request:

- CPU and MPS: ``cpu_auto_batch``, a power of two from the image size and the seeds of a (prompt, layer);
- CUDA: ``cuda_auto_batch``, as many items as the free GPU memory holds, by a per-item estimate learnt
  from the peak memory of the batches this worker already ran at the same image size (a generous guess
  before the first), at most ``AUTO_MAX``.

Either way the batch is halved on out-of-memory (generation.py); under ``auto`` the size that then ran is
remembered for later requests at that size.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

AUTO = "auto"
MaxBatch = int | Literal["auto"]

# The most items ``auto`` puts in one batch on CUDA: beyond it a GPU gains little and a cancel loses more.
AUTO_MAX = 64
# The most items ``auto`` puts in one batch on the CPU and MPS (see cpu_auto_batch); the orchestrator's
# plan batches under auto (AUTO_PLAN_BATCH in src/experiment/batches.ts) are a multiple of it.
CPU_AUTO_MAX = 16
# Output pixels a CPU batch under ``auto`` fills at least (see cpu_auto_batch): 8 images of 64x64.
CPU_BATCH_PIXELS = 32768
# The share of the free GPU memory ``auto`` plans to fill: the rest absorbs fragmentation and an estimate
# that is a little off (out-of-memory halving catches the rest).
FREE_FRACTION = 0.9
# Before any batch at a size has run: bytes per output pixel, per denoiser pass (two under classifier-free
# guidance) and per byte of the dtype. Generous on purpose (SD and SDXL need about a quarter of it with
# SDPA), so the first batch fits; the measured figure replaces it after that batch.
GUESS_BYTES_PER_PIXEL = 2048


def items_per_group(items: Sequence[Any]) -> int:
    """The most items of the request that share one (prompt, layer): its seeds per (prompt, layer)."""
    groups = Counter((item.prompt, item.layer) for item in items)
    return max(groups.values(), default=1)


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def cpu_auto_batch(items: Sequence[Any], pixels: int) -> int:
    """``auto`` on the CPU and MPS: the larger of (a) the seeds of a (prompt, layer), at most 8, rounded up
    to a power of two, and (b) as many images of ``pixels`` output pixels (the largest stage's) as fill
    CPU_BATCH_PIXELS, rounded down to a power of two; at most CPU_AUTO_MAX.

    Why, as measured (docs/benchmarks.md, `npm run bench`): (a) the official Diffusion Lens code samples a
    layer's seeds in one batch, so the lens never samples fewer at once; (b) on small images a CPU batch
    is mostly per-call overhead (Python, the scheduler, small kernels), and batching more items pays until
    about 8 images of 64x64 (at 32x32, 16 items ran 1.4-1.6x the loop where 4 ran 0.96x). Powers of two
    up to 16 divide the orchestrator's plan batches of 16, so pools and shards cut the plan as one worker
    does (the same bytes)."""
    seeds = _power_of_two_at_least(min(8, items_per_group(items)))
    by_size = _power_of_two_at_most(CPU_BATCH_PIXELS // max(1, pixels))
    return max(1, min(CPU_AUTO_MAX, max(seeds, by_size)))


def cuda_auto_batch(free_bytes: float, per_item_bytes: float, items: int) -> int:
    """``auto`` on CUDA: the items whose estimated memory fits FREE_FRACTION of ``free_bytes``, at least 1,
    at most AUTO_MAX and the request's ``items``."""
    fits = math.floor(free_bytes * FREE_FRACTION / per_item_bytes) if per_item_bytes > 0 else AUTO_MAX
    return max(1, min(AUTO_MAX, items, fits))


def first_guess_bytes(pixels: int, passes: int, element_size: int) -> float:
    """The per-item memory ``auto`` assumes before it has measured a batch at this size: ``pixels`` of the
    largest output, ``passes`` of the denoiser per step (2 under classifier-free guidance)."""
    return float(GUESS_BYTES_PER_PIXEL * pixels * passes * element_size)


@dataclass
class SizeRecord:
    """What a worker has learnt about batches of one model at one image size."""

    per_item_bytes: float | None = None  # measured: the peak above the memory at the batch's start, per item
    measured_items: int = 0  # the batch it was measured on (the largest so far: its estimate is the tightest)
    fits: int | None = None  # the batch that ran after an out-of-memory: auto stays at or below it

    def measured(self, items: int, used_bytes: float) -> None:
        per_item = used_bytes / items
        if items > self.measured_items or self.per_item_bytes is None:
            self.per_item_bytes, self.measured_items = per_item, items
        elif items == self.measured_items:
            self.per_item_bytes = max(self.per_item_bytes, per_item)


# What each loaded model's worker has learnt, by image size; forgotten with the model.
_RECORDS: weakref.WeakKeyDictionary[Any, dict[Hashable, SizeRecord]] = weakref.WeakKeyDictionary()


def records_of(model: Any) -> dict[Hashable, SizeRecord]:
    found = _RECORDS.get(model)
    if found is None:
        found = _RECORDS[model] = {}
    return found


class DeviceMemory(Protocol):
    """What ``auto`` reads of an accelerator's memory (CudaMemory; tests pass their own)."""

    def free_bytes(self) -> float: ...

    def start(self) -> None: ...

    def used_bytes(self) -> float:
        """The peak allocation since ``start``, above the allocation at ``start``."""
        ...


class CudaMemory:
    """A CUDA device's memory as the caching allocator sees it. These calls read counters on the host:
    they add no sync to the device's stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._base = 0

    def free_bytes(self) -> float:
        free, _total = torch.cuda.mem_get_info(self.device)
        # Memory torch holds in its cache but does not use is free to the next batch too.
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return float(free + cached)

    def start(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)

    def used_bytes(self) -> float:
        return float(torch.cuda.max_memory_allocated(self.device) - self._base)


@dataclass
class BatchSizer:
    """The batch size of each batch of one request. ``requested`` an integer: that, halved on
    out-of-memory. ``auto``: ``cpu_auto_batch`` without ``memory``; with it (CUDA), ``cuda_auto_batch``
    before each batch, by ``record``'s estimate (``guess_bytes`` before one is measured)."""

    requested: MaxBatch
    items: Sequence[Any]
    pixels: int = 0  # output pixels of an item's largest image (cpu_auto_batch)
    record: SizeRecord = field(default_factory=SizeRecord)
    memory: DeviceMemory | None = None
    guess_bytes: float = 0.0
    limit: int = 0  # the batch limit in effect (reported as the done reply's max_batch_used)

    def __post_init__(self) -> None:
        if self.requested != AUTO:
            self.limit = int(self.requested)
        elif self.memory is None:
            self.limit = cpu_auto_batch(self.items, self.pixels)
        else:
            self.limit = AUTO_MAX
        if self.requested == AUTO and self.record.fits is not None:
            self.limit = min(self.limit, self.record.fits)

    @property
    def auto(self) -> bool:
        return self.requested == AUTO

    def next_size(self) -> int:
        """The most items the next batch may hold."""
        if self.auto and self.memory is not None:
            per_item = self.record.per_item_bytes or self.guess_bytes
            fits = cuda_auto_batch(self.memory.free_bytes(), per_item, len(self.items))
            self.limit = min(fits, self.record.fits or AUTO_MAX)
        return self.limit

    @contextmanager
    def measuring(self, items: int) -> Iterator[None]:
        """Around a batch of ``items``: under ``auto`` with a device memory, learn its memory per item."""
        if not (self.auto and self.memory is not None):
            yield
            return
        self.memory.start()
        yield
        self.record.measured(items, self.memory.used_bytes())

    def out_of_memory(self, limit: int, items: int) -> int:
        """A batch of ``items`` (> 1) ran out of memory under the batch limit ``limit``: the next limit, half
        of it and below ``items``, which ``auto`` remembers for later requests at this size."""
        self.limit = max(1, min(limit // 2, items - 1))
        if self.auto:
            self.record.fits = min(self.record.fits or self.limit, self.limit)
        return self.limit


def size_key(height: int, width: int, stage2: tuple[int, int] | None, passes: int) -> Hashable:
    """What a per-item memory estimate depends on besides the model: the image sizes and the denoiser's
    passes per step."""
    return (height, width, stage2, passes)
