"""Profiler: parameters, MACs, memory, energy, the conv/FC split, and latency on runtimes.

``profile(model, data)`` returns a ``Profile`` whose figures say how they were obtained
(``counted`` / ``measured`` / ``estimated``); ``count_params`` and ``count_macs`` are the exact
counters it uses.
"""
from dnnzip.profile.core import Profile, profile
from dnnzip.profile.counts import LayerCount, count_macs, count_params, total_macs
from dnnzip.profile.energy import HOROWITZ_45NM, EnergyEstimate, EnergyTable, estimate_energy
from dnnzip.profile.latency import LatencyStats, time_latency
from dnnzip.profile.memory import MemoryEstimate, activation_memory, weight_bytes
from dnnzip.profile.split import Split, split
from dnnzip.profile.table import render_table

__all__ = ["profile", "Profile", "count_params", "count_macs", "total_macs", "LayerCount",
           "EnergyTable", "EnergyEstimate", "HOROWITZ_45NM", "estimate_energy", "LatencyStats",
           "time_latency", "MemoryEstimate", "activation_memory", "weight_bytes", "Split",
           "split", "render_table"]
