"""MILK's training environments (CEIM, paper eqs. 9-12 and 16): fusion weights from cyclic Dirichlet mixup, and
the invariance objective over the per-environment losses."""
import math
from typing import Dict

import torch


def _log_gamma_samples(concentration: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """log of `count` Gamma(concentration, 1) draws, float64.

    Marsaglia & Tsang (2000) for Gamma(concentration + 1), boosted by U^(1 / concentration). Working in log space
    keeps small concentrations (the paper uses 0.01) from underflowing to all-zero Dirichlet draws.
    """
    d = concentration + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    log_gamma = torch.empty(count, dtype=torch.float64)
    pending = torch.arange(count)
    while pending.numel() > 0:  # rejection rounds, not items: each round accepts > 95% of what is pending
        x = torch.randn(pending.numel(), generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        u = torch.rand(pending.numel(), generator=generator, dtype=torch.float64)
        log_v = torch.log(torch.where(v > 0, v, torch.ones_like(v)))
        accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        log_gamma[pending[accepted]] = math.log(d) + log_v[accepted]
        pending = pending[~accepted]
    # 1 - U lies in (0, 1], so its log is finite.
    boost = torch.log1p(-torch.rand(count, generator=generator, dtype=torch.float64)) / concentration
    return log_gamma + boost


def sample_dirichlet(concentration: float, num_draws: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """`num_draws` rows from the symmetric Dirichlet(concentration, ..., concentration) on `dim` components."""
    log_gamma = _log_gamma_samples(concentration, num_draws * dim, generator).view(num_draws, dim)
    return torch.softmax(log_gamma, dim=1).float()


class EnvironmentSampler:
    """Fusion weights of the training environments (paper eqs. 9-12), one row per environment.

    Row 0 is the equal-weight environment (1/M each) when `include_equal_env`. The other M rows come from one
    Dirichlet draw Theta_1 and its cyclic shifts: Theta_m is Theta_{m-1} with its last weight moved to the front,
    so each modality carries the largest weight in exactly one of them. Without `cyclic_shift` they are M
    independent draws. Without `resample` the rows are drawn once, here, and returned on every call.
    Draws come from a private generator seeded with `seed`, so a run's environments depend on the seed alone.
    The Dirichlet rows are drawn `draws_per_call` at a time and handed out in order: one vectorised draw serves
    many training steps (a draw per step costs about as much as the rest of the environment losses).
    """

    draws_per_call = 256

    def __init__(
        self,
        num_modalities: int,
        dirichlet_alpha: float,
        include_equal_env: bool = True,
        cyclic_shift: bool = True,
        resample: bool = True,
        seed: int = 0,
    ):
        self.num_modalities = num_modalities
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.include_equal_env = include_equal_env
        self.cyclic_shift = cyclic_shift
        self.generator = torch.Generator().manual_seed(int(seed))
        self._pending = torch.empty(0, num_modalities)  # Dirichlet rows drawn but not yet handed out
        self._fixed = None if resample else self._draw()

    @property
    def num_environments(self) -> int:
        return self.num_modalities + int(self.include_equal_env)

    def __call__(self) -> torch.Tensor:
        """Weights of shape (num_environments, num_modalities) on CPU; each row sums to 1."""
        return self._fixed.clone() if self._fixed is not None else self._draw()

    def state(self) -> Dict[str, torch.Tensor]:
        """The generator's state and the rows drawn ahead: what a resumed run needs to draw on identically."""
        return {"generator": self.generator.get_state(), "pending": self._pending.clone()}

    def load_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())
        self._pending = state["pending"].cpu().clone()

    def _dirichlet_rows(self, count: int) -> torch.Tensor:
        if self._pending.shape[0] < count:
            fresh = sample_dirichlet(self.dirichlet_alpha, max(count, self.draws_per_call), self.num_modalities,
                                     self.generator)
            self._pending = torch.cat([self._pending, fresh])
        rows, self._pending = self._pending[:count], self._pending[count:]
        return rows

    def _draw(self) -> torch.Tensor:
        m = self.num_modalities
        if self.cyclic_shift:
            first = self._dirichlet_rows(1)[0]
            # Row k is `first` rolled right by k places: row_k[i] = first[(i - k) mod M].
            shifts = torch.arange(m).unsqueeze(1)
            weights = first[(torch.arange(m).unsqueeze(0) - shifts) % m]
        else:
            weights = self._dirichlet_rows(m)
        if self.include_equal_env:
            weights = torch.cat([torch.full((1, m), 1.0 / m), weights])
        return weights


def combine_environment_losses(env_losses: torch.Tensor, reduction: str, invariance_weight: float) -> torch.Tensor:
    """Invariance objective over per-environment losses (paper eq. 16, without alignment and regulariser).

    mean: mean_e L_e + w * population variance (the paper's formula; both are moments of the uniform distribution
    over environments). sum: sum_e L_e + w * unbiased variance (the authors' code).
    """
    if reduction == "mean":
        return env_losses.mean() + invariance_weight * env_losses.var(correction=0)
    return env_losses.sum() + invariance_weight * env_losses.var(correction=1)
