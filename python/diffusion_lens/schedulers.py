"""Schedulers by name. ``default`` keeps the checkpoint's own scheduler class and config."""

from __future__ import annotations

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Names are the public contract (the TS config enum must list the same ones; a test checks it).
SCHEDULERS: dict[str, tuple[str, dict[str, object]]] = {
    "dpm-multistep": ("DPMSolverMultistepScheduler", {}),
    "dpm-singlestep": ("DPMSolverSinglestepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
SCHEDULER_NAMES = ["default", *SCHEDULERS]


def make_scheduler(name: str | None, checkpoint_scheduler: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler (schedulers are stateful: one per sampling run) built on the checkpoint's config."""
    if name is None or name == "default":
        return type(checkpoint_scheduler).from_config(checkpoint_scheduler.config)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    class_name, overrides = SCHEDULERS[name]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(checkpoint_scheduler.config, **overrides)
