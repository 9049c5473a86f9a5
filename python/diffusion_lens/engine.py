"""The compute side of the worker: serves load, generate and score requests, one at a time, on its own thread.
It talks to the I/O thread only through ``emit`` and its per-request cancel flags."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from . import protocol
from .ablations import Ablation, AblationError, Mix, read_embeds
from .devices import is_out_of_memory, resolve_device, resolve_dtype
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
from .png_stream import PngStream, png_pool
from .scorers import Item as ScoreItem
from .scorers import (
    Question,
    Scorer,
    ScorerLoadError,
    ScorerRequestError,
    ScorerSpec,
    decode_png,
    load_scorer,
)
from .timings import ms_since

Emit = Callable[[protocol.Message], None]
log = logging.getLogger("diffusion_lens.engine")

# The clients whose last load the engine remembers (a persistent worker meets many); the oldest is forgotten.
MAX_CLIENTS = 1024
# A load request's envelope; the rest of its fields say what model it loads.
_ENVELOPE = ("v", "id", "type")


def load_fields(request: protocol.Message) -> dict[str, Any]:
    """What a load request asks for: its fields less the envelope."""
    return {name: value for name, value in request.items() if name not in _ENVELOPE}


def _same_load(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two loads' fields are the same, types included (Python has True == 1 == 1.0)."""
    if a is None or b is None:
        return False
    try:
        return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return False


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


class ModelLoadFailed(Exception):
    """Loading a client's model again before its generate failed unexpectedly (load_failed, with the
    traceback)."""


class ScorerLoadFailed(Exception):
    """A scorer failed to load in a way its own checks did not foresee (answered load_failed, with the
    traceback)."""


# Items a scorer is given at once: the unit of cancellation, and of the `scored` messages' arrival.
SCORE_CHUNK = 16


class Engine:
    """Serves one request at a time. Several clients may share it: each remembers its own last successful
    load, and a generate from a client whose model is not the one loaded (another client loaded another
    since) first loads that client's model again. A load equal to the loaded one is answered at once.

    ``handle``'s ``key`` names the request for ``cancel`` (the server makes it unique across clients;
    by default the request's id) and ``client`` is who sent it (None: the one client of a library user)."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.family: Family | None = None
        self.model: str | None = None
        # The fields of the load request that is loaded (None when none is) and its `loaded` reply.
        self.loaded: dict[str, Any] | None = None
        self._loaded_reply: protocol.Message | None = None
        self._client_loads: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
        self.reloads = 0  # loads made again for a client's generate (tests and logs)
        # The scorer of the last score request, kept for the next one; loading another replaces it. The
        # diffusion model (self.family) stays loaded either way.
        self.scorer: tuple[ScorerSpec, Scorer] | None = None
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._png_pool: ThreadPoolExecutor | None = None  # started with the first generate request

    def cancel(self, key: str) -> None:
        with self._lock:
            self._cancelled.add(key)

    def forget_cancel(self, key: str) -> None:
        """The request ``key`` has ended: a cancel that came too late must not cancel a later one."""
        with self._lock:
            self._cancelled.discard(key)

    def _is_cancelled(self, key: str) -> bool:
        with self._lock:
            return key in self._cancelled

    def forget_client(self, client: Hashable) -> None:
        """``client`` has gone: forget its load (the model stays loaded for the others)."""
        with self._lock:
            self._client_loads.pop(client, None)

    def _client_load(self, client: Hashable) -> dict[str, Any] | None:
        with self._lock:
            return self._client_loads.get(client)

    def _remember_load(self, client: Hashable, fields: dict[str, Any] | None) -> None:
        with self._lock:
            self._client_loads.pop(client, None)
            if fields is not None:
                self._client_loads[client] = fields
                while len(self._client_loads) > MAX_CLIENTS:
                    self._client_loads.popitem(last=False)

    def handle(self, request: protocol.Message, key: str | None = None, client: Hashable = None) -> None:
        """Serve one load, generate or score request; every outcome, failure included, becomes messages."""
        request_id = request["id"]
        key = request_id if key is None else key
        try:
            if self._is_cancelled(key):
                raise Cancelled()
            if request["type"] == "load":
                self.emit(self._load(request, client))
            elif request["type"] == "score":
                self.emit(self._score(request, key))
            else:
                self.emit(self._generate(request, key, client))
        except Cancelled:
            self.emit(protocol.error(request_id, "cancelled", f"request {request_id} was cancelled"))
        except NotLoaded as exc:
            self.emit(protocol.error(request_id, "not_loaded", str(exc)))
        except (BadRequest, ScorerRequestError) as exc:
            self.emit(protocol.error(request_id, "bad_request", str(exc)))
        except OutOfMemory as exc:
            self.emit(protocol.error(request_id, "oom", str(exc), traceback.format_exc()))
        except (CheckpointError, ScorerLoadError) as exc:
            self.emit(protocol.error(request_id, "load_failed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client as an error
            load = request["type"] == "load" or isinstance(exc, ScorerLoadFailed | ModelLoadFailed)
            code = "load_failed" if load else "internal"
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
                self._cancelled.discard(key)

    def _load(self, request: protocol.Message, client: Hashable) -> protocol.Message:
        """Loads the model (or keeps it, when it is the one loaded) and makes it ``client``'s. A failed
        load leaves the client with none (it asked for this one, not its last)."""
        fields = load_fields(request)
        self._remember_load(client, None)
        if _same_load(fields, self.loaded) and self._loaded_reply is not None:
            log.info("%s is loaded already: not loaded again", fields["model"])
            reply = {**self._loaded_reply, "id": request["id"]}
        else:
            reply = {**self.load_model(fields), "id": request["id"]}
        self._remember_load(client, fields)
        return reply

    def load_model(self, fields: dict[str, Any]) -> protocol.Message:
        """Loads the model a load request's ``fields`` name in place of the loaded one; the ``loaded``
        reply (with id ""). Raises what loading raises."""
        request = fields
        self.family = None  # free the previous model before loading the next
        self.model = None
        self.loaded = None
        self._loaded_reply = None
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
            compile=request["compile"],
        )
        started = time.perf_counter()
        self.family = load_family(options, request["family"])
        self.model = request["model"]
        log.info(
            "loaded %s (%s) in %.1f s", request["model"], self.family.name, time.perf_counter() - started
        )
        described = self.family.describe()
        described["notices"] = [*described["notices"], *self.family.acceleration.notices]
        reply = protocol.reply("", "loaded", model=request["model"], family=self.family.name, **described)
        self.loaded, self._loaded_reply = dict(fields), reply
        return reply

    def _model_for(self, client: Hashable) -> Family:
        """The family to serve ``client``'s generate with: its own last load, loaded again when another
        client has loaded another model since."""
        fields = self._client_load(client)
        if fields is None:
            raise NotLoaded("no model is loaded; send 'load' first")
        if not _same_load(fields, self.loaded) or self.family is None:
            log.info("loading %s again: another client's model was loaded since", fields["model"])
            self.reloads += 1
            try:
                self.load_model(fields)
            except CheckpointError:
                raise
            except Exception as exc:
                raise ModelLoadFailed(
                    f"loading this client's model {fields['model']} again failed: {type(exc).__name__}: {exc}"
                ) from exc
        assert self.family is not None
        return self.family

    def _generate(self, request: protocol.Message, key: str, client: Hashable) -> protocol.Message:
        request_id = request["id"]
        family = self._model_for(client)
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

        # PNGs are encoded on the PNG threads; their messages are sent from here (see png_stream.py).
        stream = PngStream(self._png_threads(), self.emit)

        def on_image(index: int, item: Item, stage: int, image: Any, elapsed_ms: float) -> None:
            height, width = image.shape[:2]
            message = protocol.reply(
                request_id,
                "image",
                item=index,
                prompt=item.prompt,
                layer=item.layer,
                seed=item.seed,
                stage=stage,
                width=width,
                height=height,
                elapsed_ms=elapsed_ms,
            )
            stream.submit(image, message)

        def on_progress(progress: Progress) -> None:
            stream.send_ready()
            self.emit(protocol.reply(request_id, "progress", **progress.__dict__))

        try:
            done = generate(
                family,
                request["prompts"],
                items,
                settings,
                options,
                on_image,
                on_progress,
                lambda: self._is_cancelled(key),
            )
        except BaseException:
            stream.abandon()  # the images made before the failure go out before its error
            raise
        waited = time.perf_counter()
        stream.finish()
        done["elapsed_ms"] += ms_since(waited)
        done["timings"]["png_ms"] = stream.png_ms
        return protocol.reply(request_id, "done", **done)

    def _png_threads(self) -> ThreadPoolExecutor:
        if self._png_pool is None:
            self._png_pool = png_pool()
        return self._png_pool

    def _scorer_for(self, spec: ScorerSpec) -> Scorer:
        """The scorer ``spec`` names: the one kept from the last request when it is the same, else loaded
        in its place."""
        if self.scorer is not None and self.scorer[0] == spec:
            return self.scorer[1]
        self.scorer = None  # free the previous scorer before loading the next
        try:
            scorer = load_scorer(spec)
        except (ScorerLoadError, ScorerRequestError):
            raise
        except Exception as exc:
            what = f"the {spec.kind} scorer" + (f" {spec.model}" if spec.model else "")
            raise ScorerLoadFailed(f"cannot load {what}: {type(exc).__name__}: {exc}") from exc
        self.scorer = (spec, scorer)
        return scorer

    def _score(self, request: protocol.Message, key: str) -> protocol.Message:
        """Answers every item's questions, one ``scored`` message per item, then ``score_done``. Needs no
        diffusion model, and leaves a loaded one loaded."""
        request_id = request["id"]
        started = time.perf_counter()
        spec = ScorerSpec(**request["scorer"])
        items = [
            ScoreItem(
                image=decode_png(item["png"], f"items[{i}].png"),
                prompt=item["prompt"],
                questions=tuple(
                    Question(q["id"], q["text"], q["right"], tuple(q["contrast"])) for q in item["questions"]
                ),
            )
            for i, item in enumerate(request["items"])
        ]
        scorer = self._scorer_for(spec)
        scorer.check(items)
        for start in range(0, len(items), SCORE_CHUNK):
            if self._is_cancelled(key):
                raise Cancelled()
            chunk = items[start : start + SCORE_CHUNK]
            try:
                results = scorer.score(chunk)
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise OutOfMemory(
                        f"out of memory scoring {len(chunk)} images with the {spec.kind} scorer on "
                        f"{scorer.loaded.device}: try --dtype fp16 or another device"
                    ) from exc
                raise
            for offset, scored in enumerate(results):
                answers = [asdict(answer) for answer in scored.answers]
                for answer in answers:
                    if not 0.0 <= answer["score"] <= 1.0:  # NaN too: an overflow in half precision
                        raise ValueError(
                            f"the {spec.kind} scorer gave question {answer['question']} the score "
                            f"{answer['score']!r} (try --dtype fp32)"
                        )
                self.emit(
                    protocol.reply(
                        request_id, "scored", item=start + offset, answers=answers, skipped=scored.skipped
                    )
                )
        return protocol.reply(
            request_id,
            "score_done",
            items=len(items),
            elapsed_ms=(time.perf_counter() - started) * 1000,
            scorer=asdict(scorer.loaded),
        )
