"""Next-layer statistics for ThiNet and He et al.: sampled inputs of the layers that consume a
group's channels, each channel's contribution to their outputs, and the least-squares refit.

For a consumer Conv/Linear with weight W and (unfolded, sampled) input columns X, the output is
Y = X W^T = sum_j Z_j with Z_j = X_j W_j^T the contribution of input channel j (its k x k
columns). Channel selection works on the Z_j (survey Eq. 1 and Eq. 3); after pruning, the
consumer's weights are refit by least squares, W' = argmin ||Y - X_kept W'^T||_F (He et al.
2017, step 2). Deviation from the paper: the inputs are sampled once from the unpruned model
rather than layer by layer from the partly pruned one (one calibration pass instead of one per
layer); the refit still targets the original outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.prune.graph import Group


def is_consumer(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups == 1 and m.padding_mode == "zeros"


def _cols(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows = sampled output positions, columns = the inputs each output sees (channel-major)."""
    if isinstance(m, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(m, nn.Conv1d):
        x = x.unsqueeze(2)
        k, d, s = (1, m.kernel_size[0]), (1, m.dilation[0]), (1, m.stride[0])
        pad = (0, m.padding[0]) if not isinstance(m.padding, str) else m.padding
    else:
        k, d, s, pad = m.kernel_size, m.dilation, m.stride, m.padding
    if isinstance(pad, str):  # 'same' / 'valid'
        pad = tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d)) if pad == "same" else (0, 0)
    cols = F.unfold(x, k, dilation=d, padding=pad, stride=s)  # (N, C*kk, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def capture(model: nn.Module, consumers: list[nn.Module], batches, samples: int,
            seed: int) -> dict:
    """Sampled input columns of each consumer over ``batches`` (at most ``samples`` rows)."""
    store: dict = {m: [] for m in consumers}
    gen = torch.Generator().manual_seed(seed)
    per_batch = max(samples // max(len(batches), 1), 1)

    def hook(m, inputs, output):
        c = _cols(m, inputs[0].detach())
        idx = torch.randperm(c.shape[0], generator=gen)[:per_batch]
        store[m].append(c[idx])

    handles = [m.register_forward_hook(hook) for m in consumers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {m: torch.cat(v) for m, v in store.items() if v}


def kernel_size(m: nn.Module) -> int:
    return 1 if isinstance(m, nn.Linear) else int(torch.tensor(m.kernel_size).prod())


def consumers_of(group: Group, cols: dict) -> list:
    """(module, in_idxs, root_idxs) of the group's consumers that have sampled inputs."""
    return [(m, idxs, roots) for m, is_out, idxs, roots in group.deps()
            if not is_out and m in cols and is_consumer(m)]


def contributions(group: Group, cols: dict, budget: int = 2_000_000) -> torch.Tensor | None:
    """Z: (group channels) x (samples * outputs), each root channel's summed contribution."""
    parts = []
    for m, idxs, roots in consumers_of(group, cols):
        k = kernel_size(m)
        X = cols[m]
        W = m.weight.detach().flatten(1)
        cin = W.shape[1] // k
        s = max(1, min(X.shape[0], budget // max(max(cin, group.size) * W.shape[0], 1)))
        Xs = X[:s].view(s, cin, k)[:, idxs]
        Ws = W.view(W.shape[0], cin, k)[:, idxs]
        Z = torch.einsum("sck,ock->cso", Xs, Ws)  # (len(idxs), s, out)
        Zr = torch.zeros(group.size, s, W.shape[0])
        Zr.index_add_(0, torch.as_tensor(roots, dtype=torch.long), Z)
        parts.append(Zr.flatten(1))
    return torch.cat(parts, dim=1) if parts else None


@torch.no_grad()
def refit_plan(group: Group, cols: dict, removed_roots: set, alive: dict,
               ridge: float = 1e-4) -> list:
    """Least-squares weights for each consumer after removing ``removed_roots`` (before pruning).

    ``alive[m]``: the consumer's original input channels still present (earlier groups may have
    removed others, e.g. across a concatenation); it is updated here.
    Returns (module, new_weight_with_all_current_rows, rows_removed_by_this_group)."""
    plan = []
    out_rows = {m: [i for i, r in zip(idxs, roots) if r in removed_roots]
                for m, is_out, idxs, roots in group.deps() if is_out}
    for m, idxs, roots in consumers_of(group, cols):
        k = kernel_size(m)
        cin0 = cols[m].shape[1] // k
        live = alive.setdefault(m, list(range(cin0)))
        drop_in = {i for i, r in zip(idxs, roots) if r in removed_roots}
        alive[m] = [c for c in live if c not in drop_in]
        X = cols[m].double().view(-1, cin0, k)[:, live].reshape(cols[m].shape[0], -1)
        W = m.weight.detach().flatten(1).double()
        if W.shape[1] != X.shape[1] or len(alive[m]) == len(live) or not alive[m]:
            continue
        Y = X @ W.T
        keep_in = [j for j, c in enumerate(live) if c not in drop_in]
        Xk = X.view(X.shape[0], len(live), k)[:, keep_in].reshape(X.shape[0], -1)
        if Xk.shape[0] < Xk.shape[1] // 2:  # too few samples for a sensible fit
            continue
        G = Xk.T @ Xk
        lam = ridge * float(G.diagonal().mean()) + 1e-12
        Wn = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), Xk.T @ Y).T
        plan.append((m, Wn.float(), out_rows.get(m, [])))
    return plan


@torch.no_grad()
def apply_plan(plan: list) -> None:
    """Write the refit weights into the (now pruned) consumers."""
    for m, Wn, removed_rows in plan:
        if removed_rows:
            keep = [i for i in range(Wn.shape[0]) if i not in set(removed_rows)]
            Wn = Wn[keep]
        m.weight.copy_(Wn.view_as(m.weight))
