"""The compute side of the worker: serves load and generate requests, one at a time, on its own thread.
It talks to the I/O thread only through ``emit`` and its per-request cancel flags."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from . import protocol
from .ablations import Ablation, AblationError, Mix, read_embeds
from .devices import resolve_device, resolve_dtype
from .families import (
    CheckpointError,
    CheckpointSource,
    Family,
    LoadOptions,
    LoraWeights,
    Readout,
    SamplerSettings,
    Stage2Settings,
    load_family,
)
from .generation import (
    BadRequest,
    Cancelled,
    Item,
    LensOptions,
    OutOfMemory,
    Progress,
    generate,
)
from .images import png_bytes

Emit = Callable[[protocol.Message], None]


def _ablation(request: protocol.Message) -> Ablation:
    """The request's ablation fields; the embeds file read and checked against the sha256 it was sent
    with."""
    mix, embeds = request["mix"], request["embeds"]
    try:
        injected = None if embeds is None else read_embeds(embeds["path"], embeds["sha256"])
    except AblationError as exc:
        raise BadRequest(str(exc)) from None
    return Ablation(
        tokens=request["tokens"],
        mix=None
        if mix is None
        else Mix(layers=(mix["layers"][0], mix["layers"][1]), alpha=float(mix["alpha"])),
        embeds=injected,
    )


def _stage2_settings(fields: dict[str, Any] | None) -> Stage2Settings | None:
    if fields is None:
        return None
    return Stage2Settings(
        num_inference_steps=fields["steps"],
        guidance_scale=float(fields["guidance"]),
        height=fields["height"],
        width=fields["width"],
        scheduler=fields["scheduler"],
        seed=fields["seed"],
        family_options=fields["family_options"],
    )


class NotLoaded(Exception):
    """A generate request arrived before any model was loaded."""


class Engine:
    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.family: Family | None = None
        self.model: str | None = None
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancelled.add(request_id)

    def _is_cancelled(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._cancelled

    def handle(self, request: protocol.Message) -> None:
        """Serve one load or generate request; every outcome, failure included, becomes messages."""
        request_id = request["id"]
        try:
            if self._is_cancelled(request_id):
                raise Cancelled()
            if request["type"] == "load":
                self.emit(self._load(request))
            else:
                self.emit(self._generate(request))
        except Cancelled:
            self.emit(protocol.error(request_id, "cancelled", f"request {request_id} was cancelled"))
        except NotLoaded as exc:
            self.emit(protocol.error(request_id, "not_loaded", str(exc)))
        except BadRequest as exc:
            self.emit(protocol.error(request_id, "bad_request", str(exc)))
        except OutOfMemory as exc:
            self.emit(protocol.error(request_id, "oom", str(exc), traceback.format_exc()))
        except CheckpointError as exc:
            self.emit(protocol.error(request_id, "load_failed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client as an error
            code = "load_failed" if request["type"] == "load" else "internal"
            self.emit(
                protocol.error(
                    request_id,
                    code,
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                )
            )
        finally:
            with self._lock:
                self._cancelled.discard(request_id)

    def _load(self, request: protocol.Message) -> protocol.Message:
        device = resolve_device(request["device"])
        options = LoadOptions(
            model=request["model"],
            revision=request["revision"],
            device=device,
            dtype=resolve_dtype(request["dtype"], device),
            auto_dtype=request["dtype"] == "auto",
            offload=request["offload"],
            allow_pickle=request["allow_pickle"],
            variant=request["variant"],
            stage2=CheckpointSource(**request["stage2"]) if request["stage2"] is not None else None,
            family_options=request["family_options"],
            config=request["config"],
            lora=tuple(
                LoraWeights(path=lora["path"], scale=float(lora["scale"])) for lora in request["lora"]
            ),
        )
        self.family = None  # free the previous model before loading the next
        self.family = load_family(options, request["family"])
        self.model = request["model"]
        return protocol.reply(
            request["id"], "loaded", model=request["model"], family=self.family.name, **self.family.describe()
        )

    def _generate(self, request: protocol.Message) -> protocol.Message:
        request_id = request["id"]
        if self.family is None:
            raise NotLoaded("no model is loaded; send 'load' first")
        settings = SamplerSettings(
            num_inference_steps=request["steps"],
            guidance_scale=float(request["guidance"]),
            height=request["height"],
            width=request["width"],
            scheduler=request["scheduler"],
            stage2=_stage2_settings(request["stage2"]),
            family_options=request["family_options"],
        )
        options = LensOptions(
            negative_prompt=request["negative"],
            uncond=request["uncond"],
            noise=request["noise"],
            max_batch=request["max_batch"],
            readout=Readout(
                encoders=None if request["encoders"] is None else frozenset(request["encoders"]),
                pooled=request["pooled"],
            ),
            ablation=_ablation(request),
        )
        items = [Item(**item) for item in request["items"]]

        def on_image(index: int, item: Item, stage: int, image: Any, elapsed_ms: float) -> None:
            height, width = image.shape[:2]
            self.emit(
                protocol.reply(
                    request_id,
                    "image",
                    item=index,
                    prompt=item.prompt,
                    layer=item.layer,
                    seed=item.seed,
                    stage=stage,
                    png=png_bytes(image),
                    width=width,
                    height=height,
                    elapsed_ms=elapsed_ms,
                )
            )

        def on_progress(progress: Progress) -> None:
            self.emit(protocol.reply(request_id, "progress", **progress.__dict__))

        done = generate(
            self.family,
            request["prompts"],
            items,
            settings,
            options,
            on_image,
            on_progress,
            lambda: self._is_cancelled(request_id),
        )
        return protocol.reply(request_id, "done", **done)
