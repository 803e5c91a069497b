"""Neural multiplexing: route easy inputs to a small on-device model, hard ones to a big model
(survey Sec. IV-B, [49], Eq. 11-12).

``Multiplexer`` runs the small model first; a router decides per input whether the big model must
run. Two routers:
- ``confidence``: send an input to the big model when the small model's top softmax probability is
  below ``threshold`` (no training);
- ``learned``: a lightweight MLP on the input (and the small model's logits) trained to predict
  "the small model is wrong but the big one is right". Following [49], pairs where neither model
  is right carry no routing signal and are left out; the contrastive term of Eq. 11 is realised
  as a pairwise ranking loss pushing the router score of each must-go-big input above that of
  each can-stay-small input (the survey's printed Eq. 11 is garbled; this keeps its intent —
  contrast pairs by which model is correct — with a well-defined loss). The threshold on the
  router score is then chosen on the validation split for ``target_big_share``.

Cost is reported as mean MACs per input: small + router + share_big × big.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.config import check_choice, check_range
from dnnzip.errors import ConfigError
from dnnzip.nn.spec import spec_module
from dnnzip.registry import Context, fresh_copy, technique


@spec_module("share.Multiplexer")
class Multiplexer(nn.Module):
    def __init__(self, mode: str = "confidence", threshold: float = 0.9):
        super().__init__()
        self.mode = mode
        self.threshold = float(threshold)
        self.small: nn.Module | None = None
        self.big: nn.Module | None = None
        self.router: nn.Module | None = None

    def spec_kwargs(self) -> dict:
        return {"mode": self.mode, "threshold": self.threshold}

    def route_scores(self, x: torch.Tensor, small_logits: torch.Tensor) -> torch.Tensor:
        """Higher = more in need of the big model."""
        if self.mode == "confidence":
            return 1.0 - F.softmax(small_logits, -1).max(-1).values
        return self.router(torch.cat([x.flatten(1), F.softmax(small_logits, -1)], 1)).squeeze(-1)

    def to_big(self, x: torch.Tensor, small_logits: torch.Tensor) -> torch.Tensor:
        s = self.route_scores(x, small_logits)
        cut = 1.0 - self.threshold if self.mode == "confidence" else self.threshold
        return s > cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.small(x)
        go = self.to_big(x, out)
        if bool(go.any()):
            out = out.clone()
            out[go] = self.big(x[go]).to(out.dtype)
        return out


@dataclass(frozen=True)
class MultiplexConfig:
    """mode: "confidence" or "learned". threshold: confidence below which the big model runs
    (confidence mode). target_big_share: if set, the threshold is chosen on validation data so
    that this share of inputs goes to the big model. router_hidden, router_epochs, margin: the
    learned router. The big model is ``ctx.teacher`` (the uncompressed model by default)."""

    mode: str = "confidence"
    threshold: float = 0.9
    target_big_share: float | None = None
    router_hidden: int = 32
    router_epochs: int = 3
    margin: float = 1.0

    def __post_init__(self):
        check_choice(self, "mode", ("confidence", "learned"))
        check_range(self, "threshold", 0.0, 1.0)
        if self.target_big_share is not None:
            check_range(self, "target_big_share", 0.0, 1.0)
        check_range(self, "router_hidden", 1, 4096, integer=True)
        check_range(self, "router_epochs", 0, 1000, integer=True)
        check_range(self, "margin", 0.0, None)


@torch.no_grad()
def _scores_on(mux: Multiplexer, loader) -> torch.Tensor:
    return torch.cat([mux.route_scores(x, mux.small(x)) for x, _ in loader])


def _train_router(mux: Multiplexer, ctx: Context, config: MultiplexConfig) -> None:
    loader = ctx.data.loader("train", batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed)
    opt = torch.optim.Adam(mux.router.parameters(), lr=ctx.lr)
    mux.small.eval()
    mux.big.eval()
    for _ in range(config.router_epochs):
        for b, (x, y) in enumerate(loader):
            if ctx.max_batches is not None and b >= ctx.max_batches:
                break
            with torch.no_grad():
                ls, lb = mux.small(x), mux.big(x)
                small_ok, big_ok = ls.argmax(-1) == y, lb.argmax(-1) == y
            keep = small_ok | big_ok  # neither right: no routing signal ([49])
            if keep.sum() < 2:
                continue
            target = (~small_ok & big_ok).float()[keep]
            s = mux.route_scores(x, ls)[keep]
            loss = F.binary_cross_entropy_with_logits(torch.logit(s.clamp(1e-6, 1 - 1e-6)),
                                                      target)
            pos, neg = s[target == 1], s[target == 0]
            if len(pos) and len(neg):  # contrastive pairs: big-needed above small-enough
                loss = loss + F.softplus(config.margin * (neg[None, :] - pos[:, None])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


@technique("share.multiplex", MultiplexConfig)
def multiplex(model: nn.Module, config: MultiplexConfig, ctx: Context) -> nn.Module:
    """Wrap ``model`` (small) and ``ctx.teacher`` (big) in a routing ``Multiplexer``."""
    if ctx.teacher is None:
        raise ConfigError("share.multiplex needs the big model as ctx.teacher (a recipe sets it "
                          "to the uncompressed model)")
    x = ctx.example()
    with torch.no_grad():
        ys, yb = model.eval()(x), ctx.teacher.eval()(x)
    if ys.shape != yb.shape:
        raise ConfigError(f"small model outputs {tuple(ys.shape)} but big model outputs "
                          f"{tuple(yb.shape)}; both must solve the same task")
    mux = Multiplexer(config.mode, config.threshold)
    mux.small, mux.big = fresh_copy(model), fresh_copy(ctx.teacher)
    for p in mux.big.parameters():
        p.requires_grad_(False)
    if config.mode == "learned":
        feat = x[0].numel() + ys.shape[-1]
        mux.router = nn.Sequential(nn.Linear(feat, config.router_hidden), nn.ReLU(),
                                   nn.Linear(config.router_hidden, 1), nn.Sigmoid())
        mux.threshold = 0.5
        if ctx.data is not None:
            _train_router(mux, ctx, config)
    if config.target_big_share is not None and ctx.data is not None:
        scores = _scores_on(mux, ctx.data.loader("val", batch_size=256))
        q = torch.quantile(scores, 1.0 - config.target_big_share).item()
        mux.threshold = 1.0 - q if config.mode == "confidence" else q
    mux._dnnzip_ref = structure_ref(model)
    return mux.eval()


def structure_ref(small: nn.Module) -> dict:
    """The artifact reference of a Multiplexer: "rebuild entirely from the module tree".

    ``{"structure": True}`` is the intent. Until ``dnnzip.artifact.pack`` understands it, the
    reference also names a zoo model (the small model's own, else a tiny LeNet-300-100) as the
    base: ``unpack`` builds that base, sees that the recorded root class (share.Multiplexer)
    differs, and builds the whole tree from the structure with ``build_module``; the placeholder
    is discarded. Every module inside must therefore be a registered (spec) class.
    """
    ref = getattr(small, "_dnnzip_ref", None)
    if isinstance(ref, dict) and "zoo" in ref:
        return {"structure": True, "zoo": ref["zoo"], "kwargs": dict(ref.get("kwargs", {}))}
    return {"structure": True, "zoo": "lenet300", "kwargs": {"input_size": 1, "hidden": [1, 1]}}


@torch.no_grad()
def multiplex_report(mux: Multiplexer, data, *, thresholds=None, split: str = "test") -> list[dict]:
    """Accuracy, share of inputs sent to the big model and mean MACs per input, per cut on the
    router score (an input goes big when its score > cut). By default the cuts run from "all
    big" (-inf) through the score deciles to "all small" (the largest score)."""
    from dnnzip.profile import count_macs

    x1 = data.example_input(1)
    macs = {k: sum(c.macs_dense for c in count_macs(getattr(mux, k), x1))
            for k in ("small", "big")}
    router_macs = 0 if mux.router is None else sum(
        m.in_features * m.out_features for m in mux.router.modules() if isinstance(m, nn.Linear))
    loader = data.loader(split, batch_size=256)
    xs, ys = zip(*loader)
    scores = torch.cat([mux.route_scores(x, mux.small(x)) for x in xs])
    pred_s = torch.cat([mux.small(x).argmax(-1) for x in xs])
    pred_b = torch.cat([mux.big(x).argmax(-1) for x in xs])
    y = torch.cat(ys)
    if thresholds is None:
        thresholds = [float("-inf")] + torch.quantile(scores, torch.linspace(0.1, 1, 10)).tolist()
    rows = []
    for cut in thresholds:
        go = scores > cut
        pred = torch.where(go, pred_b, pred_s)
        share = float(go.float().mean())
        rows.append({"cut": float(cut), "big_share": share,
                     "accuracy": float((pred == y).float().mean()),
                     "mean_macs": macs["small"] + router_macs + share * macs["big"]})
    return rows
