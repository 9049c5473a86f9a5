"""Named schedulers built on a checkpoint's scheduler config: one that cannot keep a zero-terminal-SNR
schedule is refused, rather than silently sampling on another noise schedule."""

from __future__ import annotations

import pytest
from diffusers import DPMSolverMultistepScheduler

from diffusion_lens.schedulers import SCHEDULERS, make_scheduler, scheduler_problem

ZERO_SNR = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_zero_snr_schedule_is_kept_or_refused(name):
    checkpoint = DPMSolverMultistepScheduler(**ZERO_SNR)
    problem = scheduler_problem(name, checkpoint.config)
    if problem is None:
        scheduler = make_scheduler(name, checkpoint)
        assert scheduler.config.rescale_betas_zero_snr is True
        # The rescaled schedule ends (near) pure noise: alpha_bar at the last timestep ~0.
        assert float(scheduler.alphas_cumprod[-1]) < 1e-6
    else:
        assert problem.startswith(f"scheduler: {name!r} cannot sample this checkpoint's zero-terminal-SNR")
        with pytest.raises(ValueError, match="choose default or one of"):
            make_scheduler(name, checkpoint)


def test_the_refused_ones_are_those_that_would_drop_the_setting():
    checkpoint = DPMSolverMultistepScheduler(**ZERO_SNR)
    refused = {name for name in SCHEDULERS if scheduler_problem(name, checkpoint.config)}
    assert refused == {"dpm-singlestep", "pndm", "heun", "lms"}
    plain = DPMSolverMultistepScheduler(prediction_type="v_prediction")
    assert all(scheduler_problem(name, plain.config) is None for name in SCHEDULERS)
