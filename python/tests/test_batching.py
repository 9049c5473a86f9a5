"""``max_batch: auto``: the CPU rule, the CUDA rule as a pure function, the sizer's learning with a
stand-in for the GPU's memory, and a request through the lens."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from diffusion_lens import generation
from diffusion_lens.batching import (
    AUTO_MAX,
    CPU_AUTO_MAX,
    FREE_FRACTION,
    BatchSizer,
    CudaMemory,
    SizeRecord,
    cpu_auto_batch,
    cuda_auto_batch,
    first_guess_bytes,
    items_per_group,
    records_of,
)
from diffusion_lens.families import SamplerSettings
from diffusion_lens.generation import Item, LensOptions, batch_sizer, generate

GB = 1e9
SETTINGS = SamplerSettings(num_inference_steps=2, guidance_scale=7.5, height=32, width=32, scheduler=None)


def sweep(prompts: int, layers: int, seeds: int) -> list[Item]:
    """Items in plan order: prompt, then layer, then seed."""
    return [Item(p, layer, seed) for p in range(prompts) for layer in range(layers) for seed in range(seeds)]


LARGE = 512 * 512  # output pixels past which the size asks for one item: the seeds decide


@pytest.mark.parametrize(
    ("seeds", "expected"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8), (12, 8), (100, 8)]
)
def test_cpu_auto_on_large_images_is_a_layers_seeds_up_to_a_power_of_two_at_most_8(seeds, expected):
    assert cpu_auto_batch(sweep(2, 3, seeds), LARGE) == expected


@pytest.mark.parametrize(
    ("side", "expected"), [(16, 16), (32, 16), (48, 8), (64, 8), (96, 2), (128, 2), (181, 1), (768, 1)]
)
def test_cpu_auto_on_small_images_fills_32768_pixels_in_powers_of_two_at_most_16(side, expected):
    assert CPU_AUTO_MAX == 16
    assert cpu_auto_batch(sweep(1, 3, 1), side * side) == expected
    # The seeds of a layer are a floor: 4 seeds never sample fewer than 4 at once.
    assert cpu_auto_batch(sweep(1, 3, 4), side * side) == max(4, expected)


def test_cpu_auto_counts_the_largest_group_of_a_partial_request():
    """A resumed run asks for what is missing: groups of different sizes, the largest decides."""
    items = [Item(0, 0, 3), Item(0, 1, 0), Item(0, 1, 1), Item(0, 1, 2), Item(1, 1, 0)]
    assert items_per_group(items) == 3
    assert cpu_auto_batch(items, LARGE) == 4
    assert cpu_auto_batch([Item(0, layer, 0) for layer in range(9)], LARGE) == 1


def test_cpu_auto_batches_divide_the_orchestrators_plan_batches():
    """Pools and shards cut the plan into batches of 16 under auto (src/experiment/batches.ts): every
    CPU batch divides them, so a pool samples exactly the batches of one worker."""
    for seeds in range(1, 20):
        for side in (8, 32, 64, 100, 512):
            assert 16 % cpu_auto_batch(sweep(2, 3, seeds), side * side) == 0


def test_cuda_auto_fills_the_free_memory_within_its_bounds():
    assert cuda_auto_batch(10 * GB, 1 * GB, items=100) == int(10 * FREE_FRACTION)
    assert cuda_auto_batch(10 * GB, 1 * GB, items=3) == 3  # never more than the request has
    assert cuda_auto_batch(1000 * GB, 1 * GB, items=500) == AUTO_MAX
    assert cuda_auto_batch(0.5 * GB, 1 * GB, items=10) == 1  # one item always runs (halving is the net)
    assert cuda_auto_batch(0, 1 * GB, items=10) == 1
    assert cuda_auto_batch(10 * GB, 0, items=10) == 10


def test_the_first_guess_is_generous_and_scales_with_pixels_passes_and_dtype():
    sd = first_guess_bytes(512 * 512, passes=2, element_size=2)
    assert sd == pytest.approx(2.15 * GB, rel=0.01)  # about 4x what SD 1.5 needs per item with SDPA
    assert first_guess_bytes(1024 * 1024, 2, 2) == 4 * sd
    assert first_guess_bytes(512 * 512, 1, 2) == sd / 2
    assert first_guess_bytes(512 * 512, 2, 4) == 2 * sd


class FakeMemory:
    """A GPU's memory as the sizer reads it: ``free`` bytes, and a batch using ``per_item`` bytes each."""

    def __init__(self, free: float, per_item: float) -> None:
        self.free, self.per_item, self.items = free, per_item, 0

    def free_bytes(self) -> float:
        return self.free

    def start(self) -> None:
        pass

    def used_bytes(self) -> float:
        return self.per_item * self.items


def test_the_cuda_sizer_starts_from_the_guess_then_uses_what_it_measured():
    record = SizeRecord()
    memory = FakeMemory(free=20 * GB, per_item=0.5 * GB)
    sizer = BatchSizer("auto", sweep(1, 40, 4), record=record, memory=memory, guess_bytes=4 * GB)
    first = sizer.next_size()
    assert first == int(20 * FREE_FRACTION / 4)  # the guess: 4 items
    memory.items = first
    with sizer.measuring(first):
        pass
    assert record.per_item_bytes == 0.5 * GB and record.measured_items == first
    assert sizer.next_size() == int(20 * FREE_FRACTION / 0.5)  # 36
    # A later request at the same size starts from the measured figure.
    later = BatchSizer("auto", sweep(1, 40, 4), record=record, memory=memory, guess_bytes=4 * GB)
    assert later.next_size() == 36


def test_the_largest_measured_batch_gives_the_estimate():
    record = SizeRecord()
    record.measured(8, 8 * GB)  # 1 GB an item, overhead included
    record.measured(2, 4 * GB)  # a smaller batch: its share of the overhead is larger, so it is ignored
    assert record.per_item_bytes == 1 * GB
    record.measured(16, 12 * GB)
    assert record.per_item_bytes == 0.75 * GB
    record.measured(16, 13 * GB)  # the same size again: the more cautious figure
    assert record.per_item_bytes == 13 * GB / 16


def test_out_of_memory_halves_and_auto_remembers_what_ran():
    record = SizeRecord()
    memory = FakeMemory(free=80 * GB, per_item=0.1 * GB)
    sizer = BatchSizer("auto", sweep(2, 40, 4), record=record, memory=memory, guess_bytes=0.5 * GB)
    assert sizer.next_size() == AUTO_MAX
    assert sizer.out_of_memory(AUTO_MAX, AUTO_MAX) == 32
    assert sizer.next_size() == 32 and record.fits == 32
    assert sizer.out_of_memory(32, 5) == 4  # below the batch that failed, even when the limit was higher
    again = BatchSizer("auto", sweep(2, 40, 4), record=record, memory=memory, guess_bytes=0.5 * GB)
    assert again.next_size() == 4  # remembered for later requests at this size
    # An integer max_batch is the user's: halved within the request, nothing remembered or capped.
    fixed = BatchSizer(16, sweep(2, 40, 4), record=record, memory=memory)
    assert fixed.next_size() == 16
    assert fixed.out_of_memory(16, 16) == 8
    assert record.fits == 4


def test_the_cpu_sizer_keeps_its_rule_and_halves_on_out_of_memory():
    sizer = BatchSizer("auto", sweep(1, 3, 6), LARGE)
    assert sizer.next_size() == 8 and sizer.limit == 8
    assert sizer.out_of_memory(8, 8) == 4
    assert sizer.next_size() == 4
    assert BatchSizer(5, sweep(1, 3, 6), LARGE).next_size() == 5


def test_auto_on_the_cpu_samples_batches_of_its_rule(sd_family, monkeypatch):
    """32x32 images: 16 at once (cpu_auto_batch), across prompts and layers."""
    items = sweep(2, 5, 4)
    real_sample = sd_family.sample
    batches: list[int] = []

    def sample(cond, *args, **kwargs):
        batches.append(cond.shape[0])
        return real_sample(cond, *args, **kwargs)

    monkeypatch.setattr(sd_family, "sample", sample)
    done = generate(
        sd_family,
        ["a red apple", "two blue cubes"],
        items,
        SETTINGS,
        LensOptions(),  # max_batch defaults to auto
        on_image=lambda *args: None,
        on_progress=lambda progress: None,
    )
    assert batches == [16, 16, 8]
    assert done["max_batch_used"] == 16


def test_cuda_memory_reads_the_allocator_counters(monkeypatch):
    counters = {"allocated": 4 * GB, "peak": 4 * GB}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: counters["allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: counters["peak"])
    memory = CudaMemory(torch.device("cuda"))
    assert memory.free_bytes() == 12 * GB  # the driver's free memory and torch's unused cache
    memory.start()
    counters["peak"] = 9 * GB
    assert memory.used_bytes() == 5 * GB


def test_on_cuda_auto_learns_per_model_and_size(monkeypatch):
    """generation.batch_sizer on a stand-in CUDA model: the record is its own and the size's, the guess
    counts the pixels, the passes (two under guidance) and the dtype."""

    class CudaModel:
        device = torch.device("cuda")
        guidance = "cfg"
        pipe = SimpleNamespace(dtype=torch.float16)

    model = CudaModel()
    monkeypatch.setattr(generation, "CudaMemory", lambda device: FakeMemory(free=20 * GB, per_item=0))
    items = sweep(1, 4, 4)
    guided = batch_sizer(model, SETTINGS, items, "auto")
    assert guided.guess_bytes == first_guess_bytes(32 * 32, passes=2, element_size=2)
    assert guided.record is records_of(model)[(32, 32, None, 2)]
    unguided = batch_sizer(model, replace(SETTINGS, guidance_scale=1.0), items, "auto")
    assert unguided.record is records_of(model)[(32, 32, None, 1)] and unguided.record is not guided.record
    assert batch_sizer(model, SETTINGS, items, 3).memory is None  # an integer is used as given
    assert records_of(CudaModel()) == {}  # another model learns on its own
