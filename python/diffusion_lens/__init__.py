"""Diffusion Lens worker: hidden states of a text encoder → images, layer by layer."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
