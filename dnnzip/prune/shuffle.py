"""Channel shuffle and grouped convolutions in channel pruning.

ShuffleNet (Zhang et al. 2018, Sec. 3.1; survey: pointwise group convolution + channel shuffle)
reshapes (N, g*k, H, W) -> (N, g, k, H, W), swaps the two channel axes and flattens back: the
channel at pre-shuffle position i*k + j (conv group i, position j) moves to j*g + i. Torch-Pruning
cannot follow that permutation through the reshape/transpose, so dnnzip makes each shuffle one
opaque node while tracing and maps indices across it itself (``wire``). Two constraints follow:

- *atoms*: the reshape needs g equal groups after pruning and the same order inside each, so
  position j goes from every group at once (post-shuffle channels j*g .. j*g+g-1 together);
- *balance*: a grouped (not depthwise) conv needs every conv group to lose equally many
  channels; behind a shuffle its groups are contiguous in the *post*-shuffle order, so one atom
  can touch two of them.

``Layout.lowest`` picks the lowest-scored removable set under both (a small exact dynamic
programme over atoms, keyed by the per-conv-group imbalance). With the zoo's ShuffleNet
(mid = 15/30/60 channels, 3 groups: 5/10/20 positions per group) the largest balanced removals
up to half are 6/15, 12/30 and 27/60 channels. ``GroupedConvPruner`` removes different input
positions in different conv groups (Torch-Pruning's conv rule assumes the same positions).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers
from torch_pruning.pruner import function as tpf

from dnnzip.errors import UnsupportedLayerError

_SHUFFLES: dict[type, Callable[[nn.Module], int]] = {}
# Torch-Pruning nodes that set their own index mappings: a shuffle next to one is left alone.
_MAPPED = {tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.RESHAPE,
           tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND, tp.ops.OPTYPE.SLICE}
MAX_STATES = 20_000


def register_shuffle(cls: type, groups: Callable[[nn.Module], int] = lambda m: m.groups) -> None:
    """``cls`` is a channel shuffle (Zhang et al. 2018) with ``groups(module)`` groups on dim 1."""
    _SHUFFLES[cls] = groups


def shuffle_types() -> dict:
    out = dict(_SHUFFLES)
    try:
        from dnnzip.zoo.shufflenet import ChannelShuffle
        out.setdefault(ChannelShuffle, lambda m: m.groups)
    except ImportError:
        pass
    return out


class ShufflePruner(tpf.BasePruningFunc):
    """The shuffle itself has nothing to prune (its ``groups`` stay); indices are mapped by the
    edges around it (``wire``)."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer, idxs):
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return None

    get_in_channels = get_out_channels


class GroupedConvPruner(tpf.ConvPruner):
    """Torch-Pruning's conv rule, but a grouped conv may lose different input positions in each
    conv group (as long as every group loses equally many)."""

    def prune_in_channels(self, layer, idxs):
        G = layer.groups
        if G == 1 or layer.transposed:
            return super().prune_in_channels(layer, idxs)
        per, rm = layer.in_channels // G, set(int(i) for i in idxs)
        keep = [[t - p * per for t in range(p * per, (p + 1) * per) if t not in rm]
                for p in range(G)]
        if len({len(k) for k in keep}) != 1:
            raise UnsupportedLayerError(
                f"pruning would leave the groups of a grouped {type(layer).__name__} unequal "
                f"({[len(k) for k in keep]} input channels); this is a dnnzip bug, please report "
                "it, and add the layer to ignore= meanwhile.")
        if all(k == keep[0] for k in keep):
            return super().prune_in_channels(layer, idxs)
        out_per = layer.out_channels // G

        def cut(w):
            return torch.cat([w[p * out_per:(p + 1) * out_per][:, keep[p]] for p in range(G)])
        w = layer.weight
        new = nn.Parameter(cut(w.detach()).contiguous(), requires_grad=w.requires_grad)
        if w.grad is not None:
            new.grad = cut(w.grad)
        layer.weight = new
        layer.in_channels -= len(rm)
        return layer


class _Pass(torch.autograd.Function):
    """Identity on ``y`` whose autograd parent is ``x``: one opaque node per shuffle."""

    @staticmethod
    def forward(ctx, x, y):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return None, None


@contextlib.contextmanager
def opaque_shuffles(model: nn.Module, types: dict, info: dict):
    """While tracing, each shuffle is one node; ``info[module] = (groups, channels)``."""
    patched = []

    def make(m, orig, groups_of):
        def fwd(x, *a, **kw):
            with torch.no_grad():
                y = orig(x, *a, **kw)
            info[m] = (int(groups_of(m)), int(x.shape[1]))
            return _Pass.apply(x, y)
        return fwd

    for m in model.modules():
        for cls, groups_of in types.items():
            if isinstance(m, cls):
                m.forward = make(m, m.forward, groups_of)
                patched.append(m)
                break
    try:
        yield
    finally:
        for m in patched:
            del m.forward


class _ShuffleIndex:
    """Pre-shuffle i*k + j <-> post-shuffle j*g + i (``forward``: pre -> post)."""

    def __init__(self, groups: int, channels: int, forward: bool):
        self.g, self.k, self.forward = groups, channels // groups, forward

    def __call__(self, idxs):
        g, k = self.g, self.k
        f = (lambda t: (t % k) * g + t // k) if self.forward else (lambda p: (p % g) * k + p // g)
        return [_helpers._HybridIndex(idx=f(i.idx), root_idx=i.root_idx) for i in idxs]


def wire(dg, info: dict) -> set:
    """Put the shuffle's index mapping on the edges between it and its input; the shuffle node
    works in post-shuffle positions. Returns the shuffles that could not be wired (barriers)."""
    failed = set()
    for m, (g, c) in info.items():
        node = dg.module2node.get(m)
        if node is None:
            continue
        near = list(node.inputs) + list(node.outputs)
        if g < 1 or c % g or len(node.inputs) != 1 or any(n.type in _MAPPED for n in near):
            failed.add(m)
            continue
        inp = node.inputs[0]
        for dep in inp.dependencies:
            if dep.target is node:
                dep.index_mapping[0] = _ShuffleIndex(g, c, forward=True)
        for dep in node.dependencies:
            if dep.target is inp:
                dep.index_mapping[0] = _ShuffleIndex(g, c, forward=False)
    return failed


def _is_grouped(m) -> bool:
    return (isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups > 1
            and not (m.groups == m.in_channels == m.out_channels))


class Layout:
    """Which channel sets of a group may be removed together (see the module docstring).

    chunks: without shuffles, grouped convs see the group's channels in ``chunks`` equal
        contiguous blocks, and the same positions go from each block (the fast path).
    atoms: with shuffles, the channel sets (root indices) that go together.
    partitions: with shuffles, per grouped conv, the conv group of each root index.
    """

    def __init__(self, size: int, chunks: int = 1, atoms: list | None = None,
                 partitions: list | None = None):
        self.size, self.chunks = size, chunks
        self.atoms, self.partitions = atoms, partitions or []

    @property
    def trivial(self) -> bool:
        """Any set of channels may go."""
        return self.atoms is None and self.chunks == 1

    @classmethod
    def of(cls, size: int, items, shuffles: dict) -> "Layout":
        """Layout of a Torch-Pruning group (``items``); ``shuffles``: module -> (groups, C)."""
        parent = list(range(size))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        has_shuffle, chunks, partitions = False, 1, []
        for it in items:
            m = it.dep.target.module
            if m in shuffles:
                has_shuffle = True
                g = shuffles[m][0]
                block: dict = {}
                for idx, root in zip(it.idxs, it.root_idxs):
                    block.setdefault(idx // g, []).append(root)
                for roots in block.values():
                    for r in roots[1:]:
                        parent[find(r)] = find(roots[0])
            elif _is_grouped(m):
                is_out = it.dep.handler.__name__ == "prune_out_channels"
                c = m.out_channels if is_out else m.in_channels
                per = c // m.groups
                part = [0] * size
                for idx, root in zip(it.idxs, it.root_idxs):
                    part[root] = idx // per
                partitions.append((m.groups, part))
                chunks = math.lcm(chunks, m.groups)
        if not has_shuffle:
            return cls(size, chunks if size % chunks == 0 else 1)
        atoms: dict = {}
        for r in range(size):
            atoms.setdefault(find(r), []).append(r)
        return cls(size, 1, sorted(atoms.values()), partitions)

    def lowest(self, scores: torch.Tensor, k: int) -> list[int]:
        """The lowest-scored removable channels, as many as possible but at most ``k``."""
        if k <= 0:
            return []
        if self.atoms is not None:
            return self._balanced(scores, k)
        if self.chunks == 1:
            return sorted(int(i) for i in torch.argsort(scores, stable=True)[:k])
        cg, chunk = self.chunks, scores.numel() // self.chunks
        per = torch.argsort(scores.view(cg, chunk).mean(0), stable=True)[:k // cg]
        return sorted(int(c * chunk + j) for c in range(cg) for j in per)

    def _balanced(self, scores: torch.Tensor, k: int) -> list[int]:
        vecs = []
        for atom in self.atoms:
            v = []
            for groups, part in self.partitions:
                cnt = [0] * groups
                for r in atom:
                    cnt[part[r]] += 1
                v += [c - cnt[0] for c in cnt[1:]]
            vecs.append(tuple(v))
        live = [i for i in range(len(vecs[0]) if vecs else 0) if any(v[i] for v in vecs)]
        vecs = [tuple(v[i] for i in live) for v in vecs]
        zero = tuple(0 for _ in live)
        costs = [float(scores[a].sum()) for a in self.atoms]
        states = {(0, zero): (0.0, None)}
        for a, atom in enumerate(self.atoms):
            new = dict(states)
            for (n, d), (cost, chain) in states.items():
                if n + len(atom) > k:
                    continue
                key = (n + len(atom), tuple(x + y for x, y in zip(d, vecs[a])))
                c2 = cost + costs[a]
                if key not in new or c2 < new[key][0]:
                    new[key] = (c2, (a, chain))
            if len(new) > MAX_STATES:  # beam: keep the cheapest states (exact below the cap)
                new = dict(sorted(new.items(), key=lambda kv: kv[1][0])[:MAX_STATES])
            states = new
        key = min((q for q in states if q[1] == zero), key=lambda q: (-q[0], states[q][0]))
        best, out = states[key][1], []
        while best is not None:
            a, best = best
            out += self.atoms[a]
        return sorted(out)
