"""GRU / LSTM with k-bit weights (2-8; symmetric linear, per gate row) and float activations.

Recurrent cells keep float state: their sigmoid/tanh nonlinearities and the recurrence make
activation quantization a separate problem (the survey's Table IV lists [48] and [55] as
RNN-capable for *weights*). Each ``weight_*`` matrix is stored as codes plus one scale per row
(a row is one gate unit); biases stay float. 8-bit codes are an ``int8`` buffer, narrower codes a
``uint8`` buffer (offset by 2^(b-1)-1) hinted for bit-packing. The forward dequantizes and runs
torch's own recurrent kernel through ``torch.func.functional_call`` on a parameter-free template.
"""
from __future__ import annotations

import torch
from torch import nn

from dnnzip.nn.spec import spec_module
from dnnzip.quant.affine import check_bits, qrange, quantize_weight, symmetric_scales

_KINDS = {"gru": nn.GRU, "lstm": nn.LSTM}


@spec_module("quant.QuantRNN")
class QuantRNN(nn.Module):
    def __init__(self, kind: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, bidirectional: bool = False,
                 bits: int = 8):
        super().__init__()
        check_bits(bits, "QuantRNN", 2, 8)
        self.kind, self.bits, self.weight_bits = kind, bits, bits
        self._kw = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                        bias=bias, batch_first=batch_first, bidirectional=bidirectional)
        template = _KINDS[kind](**self._kw)
        self._names = [n for n, _ in template.named_parameters()]
        shapes = {n: p.shape for n, p in template.named_parameters()}
        for n in self._names:
            if n.startswith("weight"):
                dtype = torch.int8 if bits == 8 else torch.uint8
                self.register_buffer(self._codes(n), torch.zeros(shapes[n], dtype=dtype))
                self.register_buffer(n + "_scale", torch.ones(shapes[n][0]))
            else:
                self.register_buffer(n, torch.zeros(shapes[n]))
        for p in template.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_template", template)  # not a child: no duplicate state

    def _codes(self, name: str) -> str:
        return name + ("_int8" if self.bits == 8 else "_codes")

    @classmethod
    def from_float(cls, rnn: nn.Module, *, bits: int = 8) -> "QuantRNN":
        kind = "gru" if isinstance(rnn, nn.GRU) else "lstm"
        if isinstance(rnn, nn.LSTM) and rnn.proj_size:
            from dnnzip.errors import UnsupportedLayerError
            raise UnsupportedLayerError("LSTM with proj_size has no int8 rule; add it to ignore=.")
        mod = cls(kind, rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers,
                  bias=rnn.bias, batch_first=rnn.batch_first, bidirectional=rnn.bidirectional,
                  bits=bits)
        offset = 2 ** (bits - 1) - 1
        with torch.no_grad():
            for n, p in rnn.named_parameters():
                if n.startswith("weight"):
                    s = symmetric_scales(p, bits=bits, axis=0)
                    q = quantize_weight(p, s, bits)
                    getattr(mod, mod._codes(n)).copy_(q if bits == 8 else q + offset)
                    getattr(mod, n + "_scale").copy_(s)
                else:
                    getattr(mod, n).copy_(p)
        return mod

    def spec_kwargs(self) -> dict:
        return dict(kind=self.kind, bits=self.bits, **self._kw)

    def dnnzip_encodings(self) -> dict:
        if self.bits == 8:
            return {}
        return {self._codes(n): ("bitpack", {"bits": self.bits})
                for n in self._names if n.startswith("weight")}

    def dequantized(self) -> dict[str, torch.Tensor]:
        offset = 0 if self.bits == 8 else 2 ** (self.bits - 1) - 1
        out = {}
        for n in self._names:
            if n.startswith("weight"):
                codes = getattr(self, self._codes(n)).to(torch.float32) - offset
                out[n] = codes * getattr(self, n + "_scale").unsqueeze(1)
            else:
                out[n] = getattr(self, n)
        return out

    def forward(self, x, hx=None):
        args = (x,) if hx is None else (x, hx)
        return torch.func.functional_call(self._template, self.dequantized(), args)

    def extra_repr(self) -> str:
        lo, hi = qrange(self.bits, signed=True, narrow=True)
        return f"{self.kind}, {self._kw}, w{self.bits} codes in [{lo}, {hi}]"
