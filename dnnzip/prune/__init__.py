"""Network pruning (survey Sec. III): connection, channel/filter, layer and SVD pruning.

Importing this package registers its techniques: ``prune.connection``, ``prune.channel``,
``prune.layer``, ``prune.svd`` and ``prune.vd`` (sparse variational dropout).
"""
from dnnzip.prune import connection  # noqa: F401  (registers prune.connection)
from dnnzip.prune import channel  # noqa: F401  (registers prune.channel)
from dnnzip.prune import layer  # noqa: F401  (registers prune.layer)
from dnnzip.prune import svd  # noqa: F401  (registers prune.svd; maths in dnnzip.factor.svd)
from dnnzip.prune import vd  # noqa: F401  (registers prune.vd)
