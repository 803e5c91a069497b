"""The ``.dnz`` artifact: a safetensors container of encoded byte streams plus a JSON manifest.

``pack(model, path)`` writes it atomically and returns its size in bytes; ``unpack(path)``
rebuilds the model without unpickling; ``read_manifest(path)`` validates and returns the
manifest. Encodings (``raw``, ``fp16``, ``int8``, ``bitpack``, ``codebook``, ``sparse``) are
pluggable through ``@encoding("name")``.
"""
from dnnzip.artifact.encodings import encoding, get_encoding
from dnnzip.artifact.pack import pack, read_manifest, unpack

__all__ = ["encoding", "get_encoding", "pack", "read_manifest", "unpack"]
