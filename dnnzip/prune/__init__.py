"""Network pruning (survey Sec. III): connection, channel/filter, layer and SVD pruning.

Importing this package registers its techniques: ``prune.connection``, ``prune.channel``,
``prune.layer``, ``prune.heads`` (attention heads and FFN neurons), ``prune.svd`` (maths shared
with ``dnnzip.factor.svd``) and ``prune.vd``
(sparse variational dropout). Analysis helpers: ``sensitivity`` (per-layer accuracy-vs-ratio
curves) and ``search_ratios`` (NSGA-II over per-layer keep ratios, knee point). Layers without
a channel-pruning rule can be taught one with ``register_rule``; a channel-shuffle layer is
declared with ``register_shuffle`` (the zoo's ``ChannelShuffle`` is known), a layer whose
channels cannot be followed with ``register_barrier``.
"""
from dnnzip.prune import connection  # noqa: F401  (registers prune.connection)
from dnnzip.prune import channel  # noqa: F401  (registers prune.channel)
from dnnzip.prune import layer  # noqa: F401  (registers prune.layer)
from dnnzip.prune import svd  # noqa: F401  (registers prune.svd)
from dnnzip.prune import vd  # noqa: F401  (registers prune.vd)
from dnnzip.prune import attention  # noqa: F401  (registers prune.heads)
from dnnzip.prune.graph import register_barrier, register_rule
from dnnzip.prune.search import search_ratios
from dnnzip.prune.shuffle import register_shuffle
from dnnzip.prune.sensitivity import sensitivity

__all__ = ["register_barrier", "register_rule", "register_shuffle", "search_ratios",
           "sensitivity"]
