"""dnnzip: compress trained DNNs until they fit an edge device's budget."""
__version__ = "0.1.0"
