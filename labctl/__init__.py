"""labctl: build a Linux container from the kernel primitives up, one step at a time."""

# The one place the version is written: pyproject.toml reads it from here, `labctl --version` prints it.
__version__ = "0.1.0"
