"""Factorization and architecture redesign: ``factor.svd``, ``factor.conv``, ``design.*``.

Importing this package registers its techniques (``registry.load_builtin_techniques``).
"""
from dnnzip.factor import svd  # noqa: F401  (registers factor.svd)
from dnnzip.factor import conv  # noqa: F401  (registers factor.conv)
from dnnzip.factor import design  # noqa: F401  (registers design.depthwise, design.group_shuffle)
