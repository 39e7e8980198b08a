"""labctl: build a Linux container from the kernel primitives up, one step at a time."""

__version__ = "0.1.0"
