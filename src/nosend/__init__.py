"""The ``nosend`` command line. Nothing imports this package."""
