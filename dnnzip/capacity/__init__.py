"""Multi-capacity models (NestDNN [73], Neuro.ZERO [54]): ``capacity.nest`` plus the run-time
API ``set_capacity``, ``get_capacity``, ``num_capacities``, ``capacity_table``, ``select_capacity``.

Importing this package registers ``capacity.nest`` (``registry.load_builtin_techniques``).
"""
from dnnzip.capacity.nest import (capacity_table, get_capacity, num_capacities, select_capacity,
                                  set_capacity)

__all__ = ["capacity_table", "get_capacity", "num_capacities", "select_capacity", "set_capacity"]
