"""Sparsity schedules: the target sparsity after each of ``steps`` prune/fine-tune rounds.

- one-shot: prune to the final target at once, then fine-tune (Han et al. 2015 [86], single pass).
- iterative: Han et al.'s iterative pruning; each round removes the same fraction of the weights
  still present, so sparsity after round k is 1 - (1 - s)^(k / n).
- agp: automated gradual pruning (Zhu & Gupta 2017), s_k = s (1 - (1 - k / n)^3): prune fast while
  redundancy is high, slowly near the end.
"""
from __future__ import annotations

import enum


class Schedule(enum.Enum):
    ONE_SHOT = "one_shot"
    ITERATIVE = "iterative"
    AGP = "agp"


def sparsity_steps(schedule: Schedule, target: float, steps: int, initial: float = 0.0
                   ) -> list[float]:
    """Target sparsity after each round, ending exactly at ``target``."""
    if schedule is Schedule.ONE_SHOT or steps <= 1:
        return [target]
    n = steps
    if schedule is Schedule.ITERATIVE:
        keep0, keep = 1.0 - initial, 1.0 - target
        out = [1.0 - keep0 * (keep / keep0) ** (k / n) for k in range(1, n + 1)]
    else:
        out = [target + (initial - target) * (1.0 - k / n) ** 3 for k in range(1, n + 1)]
    out[-1] = target
    return out
