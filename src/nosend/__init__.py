"""The ``nosend`` command line. Nothing imports this package."""

# The one place the version is written besides pyproject.toml (tests/cli/test_version.py
# checks they agree): read from here, `nosend --version` works without an installation.
__version__ = "0.1.0"
