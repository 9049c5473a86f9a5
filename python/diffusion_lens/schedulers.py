"""Schedulers by name. ``default`` keeps the checkpoint's own scheduler class and config."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

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


def scheduler_problem(name: str | None, checkpoint_config: Mapping[str, Any]) -> str | None:
    """Why the scheduler ``name`` cannot sample a checkpoint with this scheduler config, or None."""
    if name is None or name == "default" or name not in SCHEDULERS:
        return None
    # A class without the option would drop it from the config and sample on another noise schedule.
    if checkpoint_config.get("rescale_betas_zero_snr") and not _zero_snr_capable(name):
        capable = ", ".join(n for n in SCHEDULERS if _zero_snr_capable(n))
        return (
            f"scheduler: {name!r} cannot sample this checkpoint's zero-terminal-SNR noise schedule "
            f"(rescale_betas_zero_snr); choose default or one of {capable}"
        )
    return None


def _zero_snr_capable(name: str) -> bool:
    scheduler_class = getattr(diffusers, SCHEDULERS[name][0])
    return "rescale_betas_zero_snr" in inspect.signature(scheduler_class.__init__).parameters


def make_scheduler(name: str | None, checkpoint_scheduler: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler (schedulers are stateful: one per sampling run) built on the checkpoint's config."""
    if name is None or name == "default":
        return type(checkpoint_scheduler).from_config(checkpoint_scheduler.config)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    problem = scheduler_problem(name, checkpoint_scheduler.config)
    if problem is not None:
        raise ValueError(problem)
    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(checkpoint_scheduler.config, **overrides)
