"""The package's import graph: provider protocols import no I/O library, and nothing is circular.

Read from the source with :mod:`ast`, not by importing: importing any
``puffin_trio`` module runs ``puffin_trio/__init__.py``, which re-exports the
supervisor (and so trio) on purpose. What counts is what each module's own
import statements pull in, at import time: module-level statements, including
those under ``if``/``try``, but not ``if TYPE_CHECKING:`` blocks or imports
inside functions (a provider opens its transport lazily, when a connection is
made).

What ``import puffin_trio`` itself loads is checked twice: on the source, like
the rest, and in a fresh interpreter (a subprocess), which also sees what the
third-party libraries import in turn.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "puffin_trio"

#: Libraries that do I/O (or schedule it); a sans-IO module imports none of them.
IO_LIBRARIES = frozenset(
    {
        "anyio",
        "asyncio",
        "coredis",
        "h11",
        "httpx",
        "selectors",
        "socket",
        "ssl",
        "trio",
        "trio_websocket",
        "websockets",
        "wsproto",
    }
)


def module_path(name: str) -> Path | None:
    """The source file of ``puffin_trio.x.y``, or None for a name that is not a module."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_statements(block)
            for handler in node.handlers:
                yield from _import_time_statements(handler.body)
        else:
            yield node


def imports_of(name: str) -> set[str]:
    """The modules ``name``'s import-time statements import.

    ``from package import submodule`` imports the submodule (the package's
    ``__init__`` runs as its parent, see :func:`own_modules`);
    ``from module import name`` imports the module.
    """
    path = module_path(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                assert node.module is not None
                base = node.module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                is_module = base.startswith("puffin_trio") and module_path(submodule) is not None
                found.add(submodule if is_module else base)
    return found


def own_modules(name: str) -> set[str]:
    """The ``puffin_trio`` modules that importing ``name`` runs, besides ``puffin_trio`` itself.

    A dotted import also runs each parent package's ``__init__`` (the top-level
    package's excepted, see the module docstring).
    """
    out = set()
    parts = name.split(".")
    for end in range(2, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if module_path(candidate) is not None:
            out.add(candidate)
    return out


def closure(start: str) -> dict[str, str]:
    """Every module reached from ``start`` by import-time imports: name -> who imported it."""
    reached: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in imports_of(current):
            targets = own_modules(imported) if imported.startswith("puffin_trio.") else {imported}
            for target in targets:
                if target not in reached:
                    reached[target] = current
                    if target.startswith("puffin_trio."):
                        todo.append(target)
    return reached


def chain(reached: dict[str, str], name: str) -> str:
    links = [name]
    while reached[links[-1]]:
        links.append(reached[links[-1]])
    return " <- ".join(links)


PROVIDER_MODULES = sorted(
    module_name(path) for path in (PACKAGE / "providers").rglob("*.py") if path.is_file()
)


def test_the_provider_modules_are_found() -> None:
    """The walk below covers every provider module, the IB package's included."""
    assert "puffin_trio.providers" in PROVIDER_MODULES
    assert "puffin_trio.providers.alpaca" in PROVIDER_MODULES
    assert "puffin_trio.providers.ib._protocol" in PROVIDER_MODULES


@pytest.mark.parametrize("name", PROVIDER_MODULES)
def test_a_provider_module_imports_no_io_library_even_transitively(name: str) -> None:
    reached = closure(name)
    offenders = sorted(m for m in reached if m.split(".")[0] in IO_LIBRARIES)
    assert not offenders, "\n".join(chain(reached, m) for m in offenders)


def test_the_walk_finds_an_io_import_where_there_is_one() -> None:
    """The check can fail: the session, which does I/O, is seen to import trio."""
    reached = closure("puffin_trio.session")
    assert "trio" in reached
    assert "puffin_trio.providers._base" in reached


def test_the_package_import_graph_has_no_cycle() -> None:
    """No module imports, at import time, a module that imports it back (directly or not)."""
    modules = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))
    modules.remove("puffin_trio")
    edges = {
        name: sorted(i for i in imports_of(name) if i.startswith("puffin_trio.") and i != name)
        for name in modules
    }
    visiting, done = object(), object()
    state: dict[str, object] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = visiting
        path.append(node)
        for nxt in edges[node]:
            if state.get(nxt) is visiting:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = done

    for name in modules:
        if name not in state:
            visit(name)


#: Libraries that only recording (pyarrow, numpy), market hours (pandas,
#: exchange_calendars), Redis distribution (coredis) or metrics
#: (prometheus_client) need: importing puffin_trio loads none of them, a user
#: who only streams never pays for them.
HEAVY_LIBRARIES = frozenset(
    {"coredis", "exchange_calendars", "numpy", "pandas", "prometheus_client", "pyarrow"}
)


def test_the_package_imports_no_heavy_library_at_import_time() -> None:
    reached = closure("puffin_trio")
    assert "puffin_trio.supervisor" in reached
    offenders = sorted(m for m in reached if m.split(".")[0] in HEAVY_LIBRARIES)
    assert not offenders, "\n".join(chain(reached, m) for m in offenders)


def loaded_after(statements: str) -> set[str]:
    """The heavy libraries in ``sys.modules`` after ``statements`` ran in a fresh interpreter."""
    script = (
        f"import json, sys\n{statements}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m in {sorted(HEAVY_LIBRARIES)!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


def test_importing_the_package_loads_no_heavy_library() -> None:
    assert loaded_after("import puffin_trio") == set()


def test_a_recording_name_imports_pyarrow_on_first_use() -> None:
    """The lazy names are the real objects: the same as the subpackage's."""
    loaded = loaded_after(
        "from puffin_trio import open_recorder, Recorder\n"
        "import puffin_trio.recording as r\n"
        "assert open_recorder is r.open_recorder and Recorder is r.Recorder"
    )
    assert {"pyarrow", "numpy"} <= loaded
    assert "coredis" not in loaded


def test_a_redis_name_imports_coredis_on_first_use() -> None:
    loaded = loaded_after(
        "import puffin_trio\n"
        "import puffin_trio.redis as r\n"
        "assert puffin_trio.open_redis_feed is r.open_redis_feed"
    )
    assert "coredis" in loaded
    assert "pyarrow" not in loaded


def test_serve_metrics_imports_prometheus_client_on_first_use() -> None:
    loaded = loaded_after(
        "import puffin_trio\n"
        "import puffin_trio.metrics as m\n"
        "assert puffin_trio.serve_metrics is m.serve_metrics"
    )
    assert "prometheus_client" in loaded
    assert "coredis" not in loaded


def test_every_public_name_resolves_and_dir_lists_it() -> None:
    """The contract holds with lazy names: each of ``__all__`` is an attribute and in ``dir()``."""
    import puffin_trio

    assert set(puffin_trio.__all__) <= set(dir(puffin_trio))
    for name in puffin_trio.__all__:
        assert getattr(puffin_trio, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    import puffin_trio

    with pytest.raises(AttributeError, match="no attribute 'open_recordr'"):
        getattr(puffin_trio, "open_recordr")  # noqa: B009
