"""The done reply's timings, and the PNG threads: images arrive as before, each before its request's done
or error, with the bytes the compute thread would have made."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lens import png_stream, protocol
from diffusion_lens.engine import Engine
from diffusion_lens.families import SamplerSettings
from diffusion_lens.generation import Item, LensOptions, generate
from diffusion_lens.images import png_bytes
from diffusion_lens.png_stream import PngStream, busy_ms, png_pool
from diffusion_lens.timings import SampleClock, Timings

from .test_lens_if import SETTINGS as IF_SETTINGS

SETTINGS = SamplerSettings(num_inference_steps=3, guidance_scale=7.5, height=32, width=32, scheduler=None)
PARTS = ("encode_ms", "denoise_ms", "decode_ms", "png_ms", "compile_ms")


def run(family, items, settings=SETTINGS, **options) -> tuple[dict, dict[tuple[int, int], np.ndarray]]:
    images: dict[tuple[int, int], np.ndarray] = {}
    done = generate(
        family,
        ["a red apple", "two blue cubes"],
        items,
        settings,
        LensOptions(**options),
        on_image=lambda index, item, stage, image, ms: images.__setitem__((stage, index), image),
        on_progress=lambda progress: None,
    )
    return done, images


def compute_ms(timings: dict) -> float:
    """The parts that run one after another on the compute thread (png runs beside them)."""
    return sum(timings[part] for part in PARTS if part != "png_ms")


def test_sd_timings_are_plausible(sd_family):
    items = [Item(0, 1, 0), Item(0, 2, 0), Item(1, 3, 1)]
    done, _ = run(sd_family, items, max_batch=2)
    timings = done["timings"]
    assert set(timings) == set(PARTS)
    assert all(value >= 0 for value in timings.values())
    assert timings["encode_ms"] > 0 and timings["denoise_ms"] > 0 and timings["decode_ms"] > 0
    assert timings["compile_ms"] == 0 and timings["png_ms"] == 0  # generate makes no PNGs; the engine does
    assert compute_ms(timings) <= done["elapsed_ms"]
    assert done["notices"] == []


def test_if_has_no_vae_so_no_decode_time(if_family):
    done, images = run(if_family, [Item(0, 2, 0), Item(1, 4, 1)], IF_SETTINGS)
    assert {stage for stage, _ in images} == {1, 2}
    timings = done["timings"]
    assert timings["decode_ms"] == 0 and timings["denoise_ms"] > 0 and timings["encode_ms"] > 0
    assert compute_ms(timings) <= done["elapsed_ms"]


def test_the_vae_decode_is_timed_by_a_wrapper_that_is_gone_after_the_call(sd_family):
    vae = sd_family.pipe.vae
    assert "decode" not in vae.__dict__
    timings = Timings()
    clock = SampleClock(sd_family.pipelines(), sd_family.device)
    with clock:
        assert "decode" in vae.__dict__
        time.sleep(0.01)
        vae.decode(torch.zeros(1, 4, 4, 4))
    assert "decode" not in vae.__dict__
    clock.add_to(timings)
    assert timings.decode_ms > 0 and timings.denoise_ms >= 10 - 1
    assert timings.decode_ms + timings.denoise_ms == pytest.approx(clock.wall_ms)


# --- the engine: PNGs off the compute thread -----------------------------------------------------------


class Recorder:
    """An engine whose every message is checked against the protocol's replies and kept."""

    def __init__(self, on_message=None) -> None:
        self.messages: list[dict] = []
        self.on_message = on_message
        self.engine = Engine(self._emit)
        self.senders: set[str] = set()

    def _emit(self, message: dict) -> None:
        problem = protocol.reply_problem(message)
        assert problem is None, problem
        self.senders.add(threading.current_thread().name)
        self.messages.append(message)
        if self.on_message is not None:
            self.on_message(self, message)

    def handle(self, message: dict) -> list[dict]:
        self.messages.clear()
        self.engine.handle(protocol.decode(protocol.encode({"v": 1, **message})))
        return list(self.messages)


def load_request(model: Path) -> dict:
    return {
        "id": "load", "type": "load", "model": str(model), "family": None, "dtype": "auto", "device": "cpu",
        "revision": None, "offload": "none", "stage2": None, "allow_pickle": False, "variant": None,
        "family_options": {}, "config": None, "lora": [], "compile": False,
    }  # fmt: skip


def generate_request(request_id: str, items: list[Item], max_batch: int | str = 2) -> dict:
    return {
        "id": request_id, "type": "generate", "prompts": ["a red apple", "two blue cubes"],
        "items": [{"prompt": i.prompt, "layer": i.layer, "seed": i.seed} for i in items],
        "negative": "", "steps": 3, "guidance": 7.5, "height": 32, "width": 32, "scheduler": None,
        "uncond": "final", "noise": "shared", "encoders": None, "pooled": "final", "tokens": "all",
        "mix": None, "embeds": None, "max_batch": max_batch, "stage2": None, "family_options": {},
    }  # fmt: skip


ITEMS = [Item(0, 1, 0), Item(0, 1, 1), Item(0, 3, 0), Item(1, 2, 4), Item(1, 5, 2)]


@pytest.fixture
def slow_png(monkeypatch):
    """PNG encoding slow enough that the compute thread would send done before it, were it not waited for."""

    def slow(image):
        time.sleep(0.05)
        return png_bytes(image)

    monkeypatch.setattr(png_stream, "png_bytes", slow)


@pytest.fixture(scope="module")
def recorder(sd_dir: Path) -> Recorder:
    recorder = Recorder()
    assert recorder.handle(load_request(sd_dir))[-1]["type"] == "loaded"
    return recorder


def test_images_come_before_done_with_the_same_bytes(recorder, sd_family, slow_png):
    messages = recorder.handle(generate_request("g", ITEMS))
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "done" and kinds.count("image") == len(ITEMS) and "error" not in kinds
    images = [m for m in messages if m["type"] == "image"]
    assert [m["item"] for m in images] == list(range(len(ITEMS)))  # in the order they were made
    assert recorder.senders == {threading.current_thread().name}  # sent from the compute thread only
    _, arrays = run(sd_family, ITEMS, max_batch=2)
    for message in images:
        assert message["png"] == png_bytes(arrays[(1, message["item"])])
    done = messages[-1]
    timings = done["timings"]
    assert timings["png_ms"] >= 50 * len(ITEMS) / 2 * 0.9  # 50 ms an image, on two threads
    assert timings["png_ms"] <= done["elapsed_ms"]
    assert compute_ms(timings) <= done["elapsed_ms"]


def test_a_cancelled_request_sends_its_finished_images_before_its_error(sd_dir, slow_png):
    def cancel_after_first_batch(recorder: Recorder, message: dict) -> None:
        if message["type"] == "progress" and message["images_done"] >= 2:
            recorder.engine.cancel("c")

    recorder = Recorder(cancel_after_first_batch)
    recorder.handle(load_request(sd_dir))
    messages = recorder.handle(generate_request("c", ITEMS))
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "error" and messages[-1]["code"] == "cancelled"
    assert [m["item"] for m in messages if m["type"] == "image"] == [0, 1]  # the first batch's, all of it
    assert "done" not in kinds


def test_a_failing_request_sends_its_finished_images_before_its_error(recorder, monkeypatch, slow_png):
    family = recorder.engine.family
    real_sample, calls = family.sample, []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(family, "sample", fail_second)
    messages = recorder.handle(generate_request("f", ITEMS))
    assert [m["type"] for m in messages if m["type"] != "progress"] == ["image", "image", "error"]
    assert messages[-1]["code"] == "internal" and "boom" in messages[-1]["message"]


def test_a_failed_png_is_the_request_error_after_the_images_before_it():
    sent: list[dict] = []
    pool = png_pool()
    stream = PngStream(pool, sent.append)
    good = np.zeros((4, 4, 3), dtype=np.uint8)
    stream.submit(good, {"item": 0})
    stream.submit(np.zeros((4, 4, 7), dtype=np.uint8), {"item": 1})  # no such PNG mode
    stream.submit(good, {"item": 2})
    with pytest.raises(TypeError):
        stream.finish()
    assert [m["item"] for m in sent] == [0]
    pool.shutdown()


def test_send_ready_never_waits_and_keeps_the_order(monkeypatch):
    sent: list[dict] = []
    release = threading.Event()

    def encode(image):
        if image[0, 0, 0] == 1:
            release.wait(10)  # the first image is slow
        return png_bytes(image)

    monkeypatch.setattr(png_stream, "png_bytes", encode)
    pool = png_pool()
    stream = PngStream(pool, sent.append)
    stream.submit(np.ones((2, 2, 3), dtype=np.uint8), {"item": 0})
    stream.submit(np.zeros((2, 2, 3), dtype=np.uint8), {"item": 1})
    time.sleep(0.2)
    stream.send_ready()  # the second is done, but waits behind the first
    assert sent == []
    release.set()
    stream.finish()
    assert [m["item"] for m in sent] == [0, 1]
    assert all(m["png"].startswith(b"\x89PNG") for m in sent)
    pool.shutdown()


def test_png_time_counts_overlapping_encodings_once():
    assert busy_ms([]) == 0
    assert busy_ms([(0.0, 1.0), (0.5, 1.5), (3.0, 3.25)]) == pytest.approx(1750)
    assert busy_ms([(2.0, 3.0), (0.0, 4.0)]) == pytest.approx(4000)


def test_on_cuda_the_decode_is_timed_with_events_read_after_the_batch(sd_family, monkeypatch):
    """The CUDA path with stand-in events: two recorded per decode, read (and waited for) only when the
    clock is read after the batch."""
    made: list[FakeEvent] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at: float | None = None
            self.waited = False
            made.append(self)

        def record(self) -> None:
            self.at = time.perf_counter()

        def synchronize(self) -> None:
            self.waited = True

        def elapsed_time(self, end: FakeEvent) -> float:
            return 7.0

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    vae = sd_family.pipe.vae
    clock = SampleClock(sd_family.pipelines(), torch.device("cuda"))
    with clock:
        vae.decode(torch.zeros(1, 4, 4, 4))
        vae.decode(torch.zeros(1, 4, 4, 4))
    assert len(made) == 4 and all(event.at is not None for event in made)
    assert not any(event.waited for event in made)  # nothing waits inside the run
    timings = Timings()
    clock.add_to(timings)
    assert timings.decode_ms == 14.0
    assert made[-1].waited and timings.denoise_ms == pytest.approx(max(0.0, clock.wall_ms - 14.0))
