"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs <output>``.

The API reference is generated from the docstrings of the public modules
(``docs/api.rst``); the user guide is in ``docs/guide/``.
"""

from importlib.metadata import version as _version

project = "puffin_trio"
author = "puffin_trio contributors"
copyright = "puffin_trio contributors"  # noqa: A001 (Sphinx's name for it)
release = _version("puffin_trio")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

# Public names only, in the order the source gives them; signatures keep their
# annotations, but long ones read better in the description.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True

default_role = "literal"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Trio-native streaming of real-time market data"}
