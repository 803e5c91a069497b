"""AdaDeep auto-compression: search over recipes under a device budget (survey Eq. 25-27)."""
from dnnzip.search.objective import AdaDeepObjective, Point
from dnnzip.search.space import SearchSpace
from dnnzip.search.study import AutoConfig, AutoResult, Search, auto, worker

__all__ = ["AdaDeepObjective", "AutoConfig", "AutoResult", "Point", "Search", "SearchSpace",
           "auto", "worker"]
