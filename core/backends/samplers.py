"""The sampler and scheduler names ComfyUI 0.3.x's KSampler takes, and the check against them.

The lists are `comfy.samplers.KSampler.SAMPLERS` and `SCHEDULERS` as `/object_info/KSampler`
reports them. The ComfyUI backend checks requests against each server's own `/object_info`;
the preview renderer has no server to ask, so it refuses what a stock ComfyUI would.
"""

from __future__ import annotations

from core.errors import InvalidInput

__all__ = ["SAMPLERS", "SCHEDULERS", "check_sampler_and_scheduler"]

SAMPLERS: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
SCHEDULERS: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)  # fmt: skip


def check_sampler_and_scheduler(sampler: str, scheduler: str) -> None:
    """Raise `InvalidInput` naming the field and the allowed names if either is not one of them."""
    if sampler not in SAMPLERS:
        raise InvalidInput("sampler", f"{sampler!r} is not a sampler; one of: {', '.join(SAMPLERS)}")
    if scheduler not in SCHEDULERS:
        raise InvalidInput("scheduler", f"{scheduler!r} is not a scheduler; one of: {', '.join(SCHEDULERS)}")
