"""docs/api.rst documents every public name of the top-level package.

The other public modules (providers, sim, testing, codec, market_hours) are
documented with ``automodule :members:``, which follows their ``__all__``; the
top-level package is grouped by concept by hand, so a name added to
``puffin_trio.__all__`` must be added there too (``sphinx-build -W`` in
``.ci/run`` checks that what is listed renders).
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import puffin_trio

API = Path(__file__).resolve().parent.parent / "docs" / "api.rst"
_DOCUMENTED = re.compile(r"^\.\. auto(?:class|function|data|exception):: puffin_trio\.(\w+)$", re.M)
_MODULE = re.compile(r"^\.\. automodule:: (puffin_trio(?:\.\w+)*)$", re.M)


def test_every_top_level_public_name_is_in_the_api_reference() -> None:
    """Each name of ``puffin_trio.__all__`` has an autodoc entry, or is a module with its own."""
    text = API.read_text(encoding="utf-8")
    documented = set(_DOCUMENTED.findall(text))
    modules = set(_MODULE.findall(text))
    missing = [
        name
        for name in puffin_trio.__all__
        if name not in documented
        and not (
            isinstance(getattr(puffin_trio, name), types.ModuleType)
            and f"puffin_trio.{name}" in modules
        )
    ]
    assert missing == []
    assert not documented - set(puffin_trio.__all__), "documented names that are not public"
