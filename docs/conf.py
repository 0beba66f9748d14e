"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs <output>``.

The API reference is generated from the docstrings of the public modules
(``docs/api.rst``); the user guide is in ``docs/guide/``.
"""

from importlib.metadata import version as _version

project = "puffin_trio"
author = "puffin_trio contributors"
copyright = "puffin_trio contributors"
release = _version("puffin_trio")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

# Members in the order the source gives them (related methods stay together).
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

default_role = "literal"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Trio-native streaming of real-time market data"}
