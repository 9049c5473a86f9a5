"""Sampling is the stock pipeline's own ``__call__``, fed the lens's embeddings: equality with the stock
pipeline then holds by construction. One generator per item (``generator=[...]``, which diffusers draws
from item by item) keeps an image independent of its batch-mates."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..schedulers import make_scheduler

if TYPE_CHECKING:  # base.py uses call_stock
    import torch

    from .base import SamplerSettings, Stage2Settings, StepCallback


def _step_callback(pipe: Any, on_step: StepCallback) -> dict[str, Any]:
    """The ``__call__`` arguments that call ``on_step(steps done, total steps)`` after every step.
    Raising from it (the lens's Cancelled) ends the run. It touches no tensor (``len`` of the timesteps
    is their shape), and neither do the lens's progress and cancel checks behind ``on_step``: nothing of
    ours copies to the host or syncs the device inside the denoising loop."""

    def report(step: int) -> None:
        on_step(step + 1, len(pipe.scheduler.timesteps))

    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            report(step)
            return {}

        return {"callback_on_step_end": on_step_end}
    # The IF pipelines have only the older per-step callback (called after each step, or each
    # scheduler-order steps for multistep schedulers such as Heun).
    return {"callback": lambda step, timestep, latents: report(step), "callback_steps": 1}


def call_stock(
    pipe: Any,
    stage: SamplerSettings | Stage2Settings,
    generators: list[torch.Generator],
    on_step: StepCallback,
    **arguments: Any,
) -> Any:
    """``pipe(**arguments)`` with ``stage``'s steps, guidance, size, scheduler and family options (named
    as the pipeline's own arguments) and one generator per item; returns its images (as
    ``output_type`` in ``arguments`` says).

    Schedulers are stateful, so each run gets a fresh one (the checkpoint's own class, or the one
    named), put in the pipeline for the call only: the pipeline keeps the checkpoint's scheduler."""
    if "negative_prompt_embeds" in arguments:
        # Some pipelines default the negative prompt to "" (PixArt) and refuse it beside its embeddings.
        arguments = {"negative_prompt": None, **arguments}
    checkpoint_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(stage.scheduler, checkpoint_scheduler)
    try:
        return pipe(
            **arguments,
            **stage.family_options,
            num_inference_steps=stage.num_inference_steps,
            guidance_scale=stage.guidance_scale,
            height=stage.height,
            width=stage.width,
            generator=generators,
            **_step_callback(pipe, on_step),
            return_dict=False,
        )[0]
    finally:
        pipe.scheduler = checkpoint_scheduler
