"""The version of bstune, read by the build (pyproject.toml) and ``bstune --version``."""

__version__ = "0.1.0"
