"""GRU/LSTM whose gate matrices are stored as low-rank factors (survey Eq. 7, [45]).

Each ``weight_ih_l{k}[_reverse]`` / ``weight_hh_l{k}[_reverse]`` named in ``ranks`` is held as two
parameters ``<name>_a (rows x r)`` and ``<name>_b (r x cols)``; all other tensors (biases, LSTM
projections, unfactored matrices) stay dense parameters under their torch names. ``forward``
recomposes the gate matrices (cost rows*r*cols once per call, not per time step; cached at
inference under ``no_grad``) and runs
torch's fused RNN kernel through ``torch.func.functional_call`` on a weightless template, so the
storage gain S_g is realised exactly and results match ``nn.GRU``/``nn.LSTM`` run on the
recomposed weights. (A per-step factored recurrence would also realise C_g but is slower than
the fused kernel in eager torch on CPU; we chose the fused kernel.)
"""
from __future__ import annotations

import torch
from torch import nn

from dnnzip.nn.spec import spec_module


class LowRankRNN(nn.Module):
    """Base of ``LowRankGRU`` / ``LowRankLSTM``; the constructor mirrors ``nn.GRU``/``nn.LSTM``."""

    _rnn_cls: type = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 ranks: dict | None = None, proj_size: int = 0):
        super().__init__()
        extra = {"proj_size": proj_size} if proj_size else {}
        self._kw = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                        bias=bias, batch_first=batch_first, dropout=dropout,
                        bidirectional=bidirectional, **extra)
        template = self._rnn_cls(**self._kw, device="meta")
        self.ranks = {str(k): int(v) for k, v in (ranks or {}).items()}
        unknown = set(self.ranks) - set(template._flat_weights_names)
        if unknown:
            raise ValueError(f"unknown RNN weight(s) {sorted(unknown)}")
        for name in template._flat_weights_names:
            shape = getattr(template, name).shape
            if name in self.ranks:
                r = self.ranks[name]
                self.register_parameter(name + "_a", nn.Parameter(torch.zeros(shape[0], r)))
                self.register_parameter(name + "_b", nn.Parameter(torch.zeros(r, shape[1])))
            else:
                self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        object.__setattr__(self, "_template", template)  # not a child: holds no state

    @property
    def batch_first(self) -> bool:
        return self._kw["batch_first"]

    @property
    def hidden_size(self) -> int:
        return self._kw["hidden_size"]

    def spec_kwargs(self) -> dict:
        return {**self._kw, "ranks": dict(self.ranks)}

    def weights(self) -> dict[str, torch.Tensor]:
        """The full (recomposed) torch-named RNN weights. Under ``torch.no_grad()`` (inference)
        the recomposition is cached until a factor changes (tracked by the tensors' version
        counters), so repeated calls pay only the recurrence."""
        if torch.is_grad_enabled():
            return self._recompose()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters(recurse=False))
        cached = self.__dict__.get("_weights_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._recompose())
            self.__dict__["_weights_cache"] = cached
        return cached[1]

    def _recompose(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self._template._flat_weights_names:
            if name in self.ranks:
                out[name] = getattr(self, name + "_a") @ getattr(self, name + "_b")
            else:
                out[name] = getattr(self, name)
        return out

    def forward(self, x, hx=None):
        args = (x,) if hx is None else (x, hx)
        tmpl = self._template
        if tmpl.training != self.training:
            tmpl.train(self.training)
        return torch.func.functional_call(tmpl, self.weights(), args)

    def to_dense(self) -> nn.Module:
        """An equivalent plain ``nn.GRU``/``nn.LSTM``."""
        rnn = self._rnn_cls(**self._kw)
        with torch.no_grad():
            for k, v in self.weights().items():
                getattr(rnn, k).copy_(v)
        return rnn


@spec_module("factor.LowRankGRU")
class LowRankGRU(LowRankRNN):
    _rnn_cls = nn.GRU


@spec_module("factor.LowRankLSTM")
class LowRankLSTM(LowRankRNN):
    _rnn_cls = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 ranks: dict | None = None, proj_size: int = 0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, ranks, proj_size)


def from_rnn(rnn: nn.Module, ranks: dict[str, int]) -> LowRankRNN:
    """A low-rank copy of ``rnn`` (nn.GRU or nn.LSTM) with the named matrices factored."""
    from dnnzip.factor.svd import svd_factors

    cls = LowRankGRU if isinstance(rnn, nn.GRU) else LowRankLSTM
    kw = dict(input_size=rnn.input_size, hidden_size=rnn.hidden_size, num_layers=rnn.num_layers,
              bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
              bidirectional=rnn.bidirectional)
    if isinstance(rnn, nn.LSTM) and rnn.proj_size:
        kw["proj_size"] = rnn.proj_size
    out = cls(**kw, ranks=ranks)
    with torch.no_grad():
        for name in rnn._flat_weights_names:
            W = getattr(rnn, name)
            if name in ranks:
                a, b = svd_factors(W, ranks[name], where=name)
                getattr(out, name + "_a").copy_(a)
                getattr(out, name + "_b").copy_(b)
            else:
                getattr(out, name).copy_(W)
    return out.train(rnn.training)
