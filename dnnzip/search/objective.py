"""AdaDeep's constrained objective (Liu et al. [71]; survey Eq. 25-27).

    argmax_c  λ1 τ(acc − acc_min) + λ2 τ(E_max − E)      (25)
    s.t.      L ≤ L_th                                   (26)
              St ≤ St_th                                 (27)

τ normalises both terms to comparable scales: accuracy by the head-room above the floor,
``τ(acc − acc_min) = (acc − acc_min) / (1 − acc_min)``, and energy by the ceiling,
``τ(E_max − E) = (E_max − E) / E_max``. Where the user gives no energy ceiling, E_max is the
baseline model's energy (the term then rewards any saving). AdaDeep solves the problem with deep
reinforcement learning; dnnzip uses Optuna's TPE sampler with the constraints passed as
``constraints_func`` (feasible iff every value ≤ 0), which needs far fewer trials on a 2-core
machine — a documented deviation. Accuracy below the floor is also a constraint, so an
infeasible trial is never chosen over a feasible one.
"""
from __future__ import annotations

from dataclasses import dataclass

from dnnzip.budget import Budget


@dataclass(frozen=True)
class Point:
    """One measured model: artifact bytes, latency (ms), energy (mJ, estimated), accuracy."""

    bytes: int
    latency_ms: float
    energy_mj: float
    accuracy: float


@dataclass(frozen=True)
class AdaDeepObjective:
    budget: Budget
    baseline: Point
    lambda1: float = 1.0
    lambda2: float = 1.0

    @property
    def acc_min(self) -> float:
        floor = self.budget.accuracy_floor(self.baseline.accuracy)
        return 0.0 if floor is None else floor

    @property
    def e_max(self) -> float:
        return self.budget.max_energy_mj or self.baseline.energy_mj

    def score(self, p: Point) -> float:
        """Eq. 25 (higher is better)."""
        head = max(1e-9, 1.0 - self.acc_min)
        acc_term = (p.accuracy - self.acc_min) / head
        e_term = (self.e_max - p.energy_mj) / max(1e-12, self.e_max)
        return self.lambda1 * acc_term + self.lambda2 * e_term

    def constraints(self, p: Point) -> list[float]:
        """Eq. 26-27 and the accuracy floor as Optuna constraint values (≤ 0 is feasible),
        each relative to its threshold so that one unit means "100 % over"."""
        b = self.budget
        out = [
            (p.latency_ms - b.max_latency_ms) / b.max_latency_ms if b.max_latency_ms else -1.0,
            (p.bytes - b.max_bytes) / b.max_bytes if b.max_bytes else -1.0,
            (p.energy_mj - b.max_energy_mj) / b.max_energy_mj if b.max_energy_mj else -1.0,
            (self.acc_min - p.accuracy) if self.budget.accuracy_floor(self.baseline.accuracy)
            is not None else -1.0,
        ]
        return out

    def feasible(self, p: Point) -> bool:
        return all(c <= 0 for c in self.constraints(p))

    def distance(self, p: Point) -> float:
        """How far outside the budget a point lies (0 when feasible): sum of relative excesses."""
        return sum(max(0.0, c) for c in self.constraints(p))
