"""What every pipeline family provides to the lens (generation.py drives it; server.py never sees torch)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..devices import dtype_name
from ..images import unit_to_uint8
from ..schedulers import SCHEDULER_NAMES, scheduler_problem
from .acceleration import Acceleration
from .options import NO_OPTIONS, OptionsSchema, options_problem, with_defaults
from .sampling import call_stock

OFFLOAD_MODES = ("none", "encoder", "model")
# Where the pooled vector comes from (families that have one): the whole encoder, the same depth as the
# layer, or the empty prompt (as the authors' Flux notebook did).
POOLED_MODES = ("final", "same-layer", "empty")


class CheckpointError(ValueError):
    """A checkpoint or load option that cannot be used; the message is written for the user."""


@dataclass(frozen=True)
class Stage2Settings:
    """A second stage (IF's super-resolution) conditioned on the same embeddings as the first; the
    names are its stock pipeline's ``__call__`` arguments."""

    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    scheduler: str | None
    seed: int | None  # None: go on with each item's stage-I generator (one generator per item)
    # The family's stage-II options (``Family.options["stage2"]``), defaults filled in.
    family_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerSettings:
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    scheduler: str | None  # None or "default": the checkpoint's own
    stage2: Stage2Settings | None = None
    # The family's sampling options (``Family.options["sample"]``), defaults filled in.
    family_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def steps_per_item(self) -> int:
        """Denoising steps one item takes, over all stages (the unit of progress)."""
        return self.num_inference_steps + (self.stage2.num_inference_steps if self.stage2 else 0)


@dataclass(frozen=True)
class CheckpointSource:
    model: str
    revision: str | None


@dataclass(frozen=True)
class LoraWeights:
    """LoRA weights to load into the pipeline (``model.lora``): a local file, or a folder holding one, and the
    weight they are applied with (1 = as trained, 0 = not at all)."""

    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class LoadOptions:
    model: str
    revision: str | None
    device: str  # resolved: cpu, cuda or mps
    dtype: torch.dtype
    offload: str  # one of OFFLOAD_MODES
    allow_pickle: bool
    stage2: CheckpointSource | None = None  # the second stage's checkpoint, for a family of two stages
    variant: str | None = None  # weight files to load, e.g. "fp16" (*.fp16.safetensors); for every stage
    auto_dtype: bool = False  # dtype was "auto": the family's accelerator dtype replaces it on a GPU
    # The family's load options (``Family.options["load"]``), as sent; the family checks them.
    family_options: Mapping[str, Any] = field(default_factory=dict)
    # A single-file ``model``'s pipeline configuration: a local diffusers folder or a hub id; None = the hub
    # repo its weights look like. Once loaded (``checkpoints.resolve_single_file``): the local folder read.
    config: str | None = None
    lora: tuple[LoraWeights, ...] = ()
    # torch.compile the denoisers (each stage's) after placing them (see acceleration.py).
    compile: bool = False

    @property
    def config_model(self) -> str:
        """Where the pipeline's configuration (model_index.json) is read: a single file's config folder,
        else the checkpoint itself."""
        return self.config or self.model


@dataclass(frozen=True)
class Readout:
    """Which hidden states the lens reads besides the layer: ``lens.encoders`` (the sequence encoders that
    follow the layer; None = all, the others stay at their stock index) and ``lens.pooled``."""

    encoders: frozenset[str] | None = None
    pooled: str = "final"

    def lensed(self, encoder: TextEncoder) -> bool:
        return encoder.sequence and (self.encoders is None or encoder.name in self.encoders)


STOCK_READOUT = Readout()


@dataclass(frozen=True)
class TextEncoder:
    """A text encoder of the pipeline as the lens reads it."""

    name: str  # the pipeline component, e.g. "text_encoder_2"
    module: Any
    layers: int  # its depth: hidden states 0..layers
    stock_index: int  # the hidden state the stock pipeline's sequence embedding takes
    norm: str | None  # the norm every sequence state the lens takes has been through (a module path)
    sequence: bool = True  # gives the sequence embedding (prompt_embeds), so follows the lens layer
    pooled: bool = False  # gives (part of) the pooled vector


# Called after each denoising step with (steps done, total steps of this run, over all stages).
StepCallback = Callable[[int, int], None]
# Stage number → one generator per item of the batch.
Generators = Mapping[int, list[torch.Generator]]
# A pipeline ``__call__``'s text arguments by name: {"prompt_embeds": tensor, ...}.
Embeds = dict[str, torch.Tensor]


class Family(ABC):
    """One pipeline family: how to load its stock pipeline and what its encoder's hidden states give as
    that pipeline's arguments; sampling is the stock pipeline's own ``__call__``."""

    name: ClassVar[str]
    # model_index.json `_class_name` values this family loads.
    pipeline_classes: ClassVar[tuple[str, ...]]
    # What the worker reports of the family (``capabilities``), which the orchestrator checks against:
    # how many stages it can run (a second one from its own checkpoint), its kind of guidance
    # ("cfg": classifier-free, a negative branch; "distilled": a guidance input, no negative), the
    # scheduler names its stock pipelines run with, and JSON Schemas of its own options at load time,
    # for sampling and for stage II (properties with their defaults; nothing else is accepted).
    stages: ClassVar[int] = 1
    guidance: ClassVar[str] = "cfg"
    # What ``dtype: auto`` means on a GPU: fp16, or bf16 for models that overflow in fp16 (Flux).
    accelerator_dtype: ClassVar[str] = "fp16"
    schedulers: ClassVar[tuple[str, ...]] = tuple(SCHEDULER_NAMES)
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": NO_OPTIONS,
        "sample": NO_OPTIONS,
        "stage2": NO_OPTIONS,
    }
    # The stock diffusers pipeline class that ``load`` loads, with components to set instead of load.
    stock_class: ClassVar[Any]
    stock_components: ClassVar[dict[str, Any]] = {}
    # The stock diffusers pipeline the family loaded (stage I where there are two).
    pipe: Any

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """The family as the worker reports it in ``ready`` and ``loaded``."""
        return {
            "name": cls.name,
            "pipeline_classes": list(cls.pipeline_classes),
            "stages": cls.stages,
            "guidance": cls.guidance,
            "schedulers": list(cls.schedulers),
            "options": {kind: dict(schema) for kind, schema in cls.options.items()},
        }

    @classmethod
    def options_problem(cls, kind: str, given: Any, where: str) -> str | None:
        """Why ``given`` is not valid as the family's ``kind`` options (named ``where``), or None."""
        return options_problem(cls.options[kind], given, where, f"the {cls.name} family")

    @classmethod
    def resolve_options(cls, kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Valid ``kind`` options with the family's defaults filled in."""
        return with_defaults(cls.options[kind], given)

    @classmethod
    def load(cls, options: LoadOptions) -> Family:
        """The checkpoint as ``stock_class``, placed as ``options`` say (a family with more to load, such
        as a second stage, overrides this)."""
        from .loading import from_pretrained, place  # loading.py imports this module

        pipe = from_pretrained(
            cls.stock_class, options.model, options.revision, options, **cls.stock_components
        )
        return cls(pipe, options, place(pipe, options))

    def __init__(self, pipe: Any, options: LoadOptions, device: torch.device) -> None:
        from .loading import resolved_revision  # loading.py imports this module

        self.pipe = pipe
        self.options = options
        # The load options as resolved (defaults filled in; a family may resolve "auto" values further).
        self.family_options: dict[str, Any] = self.resolve_options("load", options.family_options)
        self._device = device
        self.revision = resolved_revision(pipe, options.revision)
        if options.offload == "encoder" and device.type != "cpu":
            self.offloaded_encoders = pipeline_text_encoders(pipe)
        # How the pipelines were set up for the device (load_family's ``accelerate``; none by default).
        self.acceleration = Acceleration()

    def pipelines(self) -> tuple[Any, ...]:
        """The stock pipelines the family samples with, stage I first (a family of two stages adds its
        second)."""
        return (self.pipe,)

    @property
    def device(self) -> torch.device:
        """Where the denoiser runs (with CPU offload: the execution device)."""
        return self._device

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """L: the lens takes hidden-state indices 0..L (0 = embeddings, i = output of block i)."""

    @property
    def stock_layer(self) -> int:
        """The layer the stock pipeline conditions on (L for most; SDXL's penultimate): the unconditional
        branch's layer unless ``uncond: same-layer``."""
        return self.num_layers

    @property
    def has_stage2(self) -> bool:
        return False

    @abstractmethod
    def text_encoders(self) -> list[TextEncoder]:
        """The pipeline's text encoders, as the lens reads them."""

    def hidden_state_index(self, encoder: TextEncoder, layer: int, readout: Readout) -> int:
        """The hidden state of ``encoder`` that lens layer ``layer`` takes: stepped back from the encoder's
        stock index as far as ``layer`` is from the family's stock layer (so encoders of other depths stay
        aligned at their outputs; clamped to 0..its depth); its stock index when ``readout`` leaves it out."""
        if not readout.lensed(encoder):
            return encoder.stock_index
        return min(encoder.layers, max(0, encoder.stock_index + layer - self.stock_layer))

    def pooled_index(self, encoder: TextEncoder, layer: int, readout: Readout) -> int:
        """The hidden state a pooled vector is pooled from: the last, or for ``pooled: same-layer`` the one
        as far back from it as ``layer`` is from the stock layer (the stock layer gives the stock vector)."""
        if readout.pooled != "same-layer":
            return encoder.layers
        return min(encoder.layers, max(0, encoder.layers + layer - self.stock_layer))

    def readout_problem(self, readout: Readout) -> str | None:
        """Why ``readout`` cannot be read from this model, or None."""
        sequence = [encoder.name for encoder in self.text_encoders() if encoder.sequence]
        if readout.encoders is not None:
            unknown = sorted(readout.encoders - set(sequence))
            if unknown or not readout.encoders:
                what = f"{', '.join(unknown)} is not" if unknown else "none is"
                choices = ", ".join(sequence)
                return f"lens.encoders: {what} a sequence text encoder of this model; choose from {choices}"
        if readout.pooled not in POOLED_MODES:
            return f"lens.pooled must be one of {', '.join(POOLED_MODES)}, not {readout.pooled!r}"
        if readout.pooled != "final" and not any(encoder.pooled for encoder in self.text_encoders()):
            return f"lens.pooled: the {self.name} family has no pooled text vector; leave it at final"
        return None

    def encoders(self) -> list[dict[str, Any]]:
        """``loaded.encoders``: each text encoder's name (the pipeline component), class, depth, stock index,
        norm and roles, and the hidden state each lens layer 0..L takes from it (``indices``, when lensed;
        ``pooled_indices``, for ``pooled: same-layer``)."""
        readout = Readout(pooled="same-layer")
        layers = range(self.num_layers + 1)
        return [
            {
                "name": encoder.name,
                "class_name": type(encoder.module).__name__,
                "layers": encoder.layers,
                "stock_index": encoder.stock_index,
                "indices": [self.hidden_state_index(encoder, layer, readout) for layer in layers],
                "norm": encoder.norm,
                "sequence": encoder.sequence,
                "pooled": encoder.pooled,
                "pooled_indices": [self.pooled_index(encoder, layer, readout) for layer in layers]
                if encoder.pooled
                else None,
            }
            for encoder in self.text_encoders()
        ]

    def describe(self) -> dict[str, Any]:
        """`loaded` reply fields: the capabilities, encoders, pipeline_class, revision, device, dtype,
        resolved family options and no notices here; a family adds defaults, lens, and stage2 where it
        has one loaded."""
        return {
            "capabilities": self.capabilities(),
            "encoders": self.encoders(),
            "num_layers": self.num_layers,
            "stock_layer": self.stock_layer,
            "pipeline_class": type(self.pipe).__name__,
            "revision": self.revision,
            "device": str(self.device),
            "dtype": dtype_name(self.pipe.text_encoder.dtype),
            "family_options": dict(self.family_options),
            "notices": [],
            "stage2": None,
            "config": self.options.config,
            "lora": [dict(lora) for lora in self.loras],
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        """Why this model cannot sample with ``settings`` (checked, defaults filled in), or None."""
        return scheduler_problem(settings.scheduler, self.pipe.scheduler.config)

    # Set by a family loaded with ``offload: encoder`` on an accelerator: its text encoders, kept on the CPU.
    offloaded_encoders: tuple[torch.nn.Module, ...] = ()
    # The LoRA weights loaded into the pipeline (``checkpoints.load_loras``): path, scale, components.
    loras: tuple[Mapping[str, Any], ...] = ()

    def encoding(self) -> contextlib.AbstractContextManager[None]:
        """The text encoders are on the execution device inside this context (see ``encoder_visit``)."""
        if not self.offloaded_encoders:
            return contextlib.nullcontext()
        return encoder_visit(self.offloaded_encoders, self.device)

    @abstractmethod
    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        """What each of ``layers`` gives for ``prompt``, as the lens defines it: the stock pipeline's
        ``__call__`` arguments by name (``prompt_embeds``, pooled embeddings, masks), batch dim 1, each
        encoder read as ``readout`` says. The unconditional branch is the same for the negative prompt,
        passed as ``negative_<name>``."""

    def unconditional(
        self, negative_prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        """The unconditional branch's arguments for ``negative_prompt`` at ``layers``: its conditioning,
        unless the stock pipeline does otherwise (SDXL: zeros for no negative prompt)."""
        return self.conditioning(negative_prompt, layers, readout)

    def encode(self, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Each of ``layers``' ``prompt_embeds`` for ``prompt`` (batch dim 1) alone: the one argument every
        family has, for callers that compare or reuse embeddings (tests, the benchmark's stock loop)."""
        return {layer: embeds["prompt_embeds"] for layer, embeds in self.conditioning(prompt, layers).items()}

    @abstractmethod
    def tokens(self, prompt: str) -> list[str | None]:
        """The token at each position of ``prompt``'s ``prompt_embeds`` (its sequence axis), as the
        tokenizer writes it, None past the prompt's end-of-sequence token (padding): what the token
        ablations (``lens.tokens``) select by."""

    @abstractmethod
    def token_count(self, prompt: str) -> tuple[int, int]:
        """(tokens of ``prompt`` as the encoder would see it, special tokens included; the most the
        encoder takes). ``encode`` silently cuts a prompt longer than that, so the user is told."""

    def sample(
        self,
        prompt_embeds: torch.Tensor,
        generators: Generators,
        settings: SamplerSettings,
        on_step: StepCallback,
        **embeds: torch.Tensor,
    ) -> dict[int, np.ndarray]:
        """One run of the stock pipeline's ``__call__`` over a batch: its items' ``conditioning``
        concatenated, ``prompt_embeds`` (whose first dimension is the batch size) and the other
        arguments by name, ``negative_prompt_embeds`` among them. Returns (B, H, W, 3) uint8 images per
        stage; this one serves a single-stage pipeline."""
        text = {"prompt_embeds": prompt_embeds, **embeds}
        images = call_stock(self.pipe, settings, generators[1], on_step, **text, output_type="np")
        return {1: unit_to_uint8(images)}


def stock_defaults(pipe: Any, steps: int, guidance: float, side: int) -> dict[str, Any]:
    """``loaded.defaults``: the stock ``__call__``'s steps and guidance, the native size (a square of
    ``side`` pixels) and the class of the pipeline's own scheduler."""
    scheduler = type(pipe.scheduler).__name__
    return {"steps": steps, "guidance": guidance, "height": side, "width": side, "scheduler": scheduler}


def pipeline_text_encoders(pipe: Any) -> tuple[torch.nn.Module, ...]:
    """A pipeline's text encoders (``text_encoder``, ``text_encoder_2``, ...), those it has."""
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return tuple(encoder for name in names if (encoder := getattr(pipe, name, None)) is not None)


@contextmanager
def encoder_visit(encoders: Sequence[torch.nn.Module], device: torch.device) -> Iterator[None]:
    """``offload: encoder``: the text encoders live on the CPU and visit the device only while a
    request's prompts are encoded, so that the denoisers have their memory the rest of the time."""
    for encoder in encoders:
        encoder.to(device)
    try:
        yield
    finally:
        for encoder in encoders:
            encoder.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
