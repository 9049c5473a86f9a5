"""Where a generate request's time goes (the ``done`` reply's ``timings``): encoding the prompts, the stock
pipeline's denoising loop, its VAE decode, PNG encoding, and torch.compile's compiling.

The decode is timed by wrapping each pipeline's ``vae.decode`` for the duration of one stock call (the
pipeline's own loop runs unchanged). On CUDA the wrapper records CUDA events, read once after the batch
(its images have been copied to the host by then), so no host sync is added inside the loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .devices import is_out_of_memory


@dataclass
class Timings:
    """Milliseconds of a request, each part ≥ 0. encode, denoise, decode and compile happen one after another
    on the compute thread; png (the wall time during which PNGs were being encoded) runs beside them on the
    PNG threads (see png_stream.py)."""

    encode_ms: float = 0.0
    denoise_ms: float = 0.0
    decode_ms: float = 0.0
    png_ms: float = 0.0
    compile_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: max(0.0, value) for name, value in asdict(self).items()}


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (dynamo's frame compile time,
    which includes the backend's code generation); 0 where the counter cannot be read."""
    try:
        from torch._dynamo.utils import compilation_time_metrics

        return float(sum(compilation_time_metrics.get("_compile.compile_inner", ())))
    except Exception:  # noqa: BLE001 - a private counter: timings must never fail a request
        return 0.0


class _DecodeTimer:
    """Wraps one VAE's ``decode`` while installed: times each call (CUDA events on CUDA, the wall clock
    elsewhere) and notes whether one ran out of memory."""

    def __init__(self, vae: Any, device: torch.device) -> None:
        self.vae = vae
        self.cuda = device.type == "cuda"
        self.events: list[tuple[Any, Any]] = []
        self.wall_ms = 0.0
        self.out_of_memory = False

    def decode(self, original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            except Exception as exc:
                self.out_of_memory = self.out_of_memory or is_out_of_memory(exc)
                raise
            finally:
                if self.cuda:
                    end.record()
                    self.events.append((start, end))
                else:
                    self.wall_ms += ms_since(started)

        return timed

    def elapsed_ms(self) -> float:
        if not self.events:
            return self.wall_ms
        try:
            self.events[-1][1].synchronize()  # once, after the batch: its images are on the host already
            return sum(start.elapsed_time(end) for start, end in self.events)
        except Exception:  # noqa: BLE001 - events of a call that failed: no time to report, and no new error
            return 0.0


@contextmanager
def _installed(timer: _DecodeTimer) -> Iterator[None]:
    vae = timer.vae
    own = vae.__dict__.get("decode")  # a decode set on the instance (by a user, a test) stays theirs
    vae.decode = timer.decode(vae.decode)  # an instance attribute, over the class's method
    try:
        yield
    finally:
        if own is None:
            del vae.decode
        else:
            vae.decode = own


class SampleClock:
    """Times one run of the stock pipelines over a batch (``with clock: family.sample(...)``): its wall
    time split into decode (the VAE's), compile (torch.compile, when it compiled during the run) and
    denoise (the rest: the denoising loop with the pipeline's own pre- and post-processing)."""

    def __init__(self, pipelines: Sequence[Any], device: torch.device) -> None:
        vaes = [vae for pipe in pipelines if (vae := getattr(pipe, "vae", None)) is not None]
        self._timers = [_DecodeTimer(vae, device) for vae in vaes]
        self._stack = ExitStack()
        self._started = 0.0
        self._compile_before = 0.0
        self.wall_ms = 0.0
        self.compile_ms = 0.0

    def __enter__(self) -> SampleClock:
        for timer in self._timers:
            self._stack.enter_context(_installed(timer))
        self._compile_before = compile_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_ms = ms_since(self._started)
        self.compile_ms = (compile_seconds() - self._compile_before) * 1000
        self._stack.close()

    @property
    def decode_ran_out_of_memory(self) -> bool:
        """Whether a VAE decode inside the run raised out-of-memory."""
        return any(timer.out_of_memory for timer in self._timers)

    def add_to(self, timings: Timings) -> None:
        decode = sum(timer.elapsed_ms() for timer in self._timers)
        timings.decode_ms += decode
        timings.compile_ms += self.compile_ms
        timings.denoise_ms += max(0.0, self.wall_ms - decode - self.compile_ms)
