"""Events to bytes and back: the wire format for recording, replay and fan-out.

This module owns the serialised form of every class in
:data:`puffin_trio.events.EVENT_TYPES`: a flat map of the event's fields plus
a ``"type"`` tag (``"trade"``, ``"quote"``, ``"order_book_update"``, ... — the
class name in snake case, see :data:`TYPE_TAGS`), written as JSON (orjson) or
msgpack. It must not do I/O, know about providers, or change the event model.
Round trips are exact; :func:`loads` is a trust boundary that raises
:class:`~puffin_trio.errors.CodecError` for anything that is not a valid event.
The rules (non-finite floats in JSON, the int64 range, what ``loads`` rejects)
are in ``docs/guide/codec.rst``.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import cattrs
import msgpack
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception, transform_error

from puffin_trio.errors import CodecError, ConfigurationError
from puffin_trio.events import EVENT_TYPES, Event

__all__ = [
    "TYPE_TAGS",
    "Format",
    "converter",
    "dumps",
    "from_dict",
    "loads",
    "to_dict",
]

#: The wire formats :func:`dumps` and :func:`loads` speak.
Format = Literal["json", "msgpack"]

_TAG_KEY: Final = "type"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FLOAT_FROM_TEXT: Final[Mapping[str, float]] = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_LEVELS = tuple[tuple[float, float], ...]
_STRS = tuple[str, ...]
_OPTIONAL_INT = int | None


def _tag_for(cls: type) -> str:
    """``OrderBookUpdate`` -> ``"order_book_update"``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


#: Event class -> its ``"type"`` tag on the wire.
TYPE_TAGS: Final[Mapping[type, str]] = types.MappingProxyType(
    {cls: _tag_for(cls) for cls in EVENT_TYPES}
)


def _describe(value: object) -> str:
    """A short, bounded description of a bad value for an error message."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


# --- structure hooks: strict, because loads() is a trust boundary --------------------


def _structure_str(value: object, _: object) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {_describe(value)}")


def _structure_bool(value: object, _: object) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected a boolean, got {_describe(value)}")


def _structure_int(value: object, _: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {_describe(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer {value} is outside the signed 64-bit range")
    return value


def _structure_optional_int(value: object, _: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"expected an integer or null, got {_describe(value)}")
    return _structure_int(value, int)


def _structure_float(value: object, _: object = None) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise ValueError(f"{_describe(value)} is too large for a float") from None
    if kind is str and value in _FLOAT_FROM_TEXT:
        return _FLOAT_FROM_TEXT[value]  # type: ignore[index]
    raise TypeError(
        f'expected a number (or "NaN", "Infinity", "-Infinity"), got {_describe(value)}'
    )


def _structure_strs(value: object, _: object) -> tuple[str, ...]:
    if type(value) is not list and type(value) is not tuple:
        raise TypeError(f"expected an array of strings, got {_describe(value)}")
    for index, item in enumerate(value):
        if type(item) is not str:
            raise TypeError(f"element {index}: expected a string, got {_describe(item)}")
    return tuple(value)


def _structure_levels(value: object, _: object) -> tuple[tuple[float, float], ...]:
    if type(value) is not list and type(value) is not tuple:
        raise TypeError(f"expected an array of [price, size] pairs, got {_describe(value)}")
    levels = []
    for index, level in enumerate(value):
        if (type(level) is not list and type(level) is not tuple) or len(level) != 2:
            raise TypeError(f"level {index}: expected a [price, size] pair, got {_describe(level)}")
        try:
            levels.append((_structure_float(level[0]), _structure_float(level[1])))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"level {index}: {exc}") from None
    return tuple(levels)


def _enum_structure_hook(cls: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
    by_value = {member.value: member for member in cls}
    expected = ", ".join(repr(v) for v in by_value)

    def structure(value: object, _: object) -> enum.Enum:
        if type(value) is str and value in by_value:
            return by_value[value]
        raise ValueError(f"expected one of {expected}, got {_describe(value)}")

    return structure


# --- unstructure hooks: per field, so a failure names the field -----------------------


def _int64_checker(tag: str, field: str, *, optional: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if (optional and value is None) or _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise CodecError(
            f"cannot encode {tag} event: {field}={value!r} is outside the signed 64-bit range"
        )

    return check


def _json_float(value: float) -> float | str:
    """A float as JSON can carry it: non-finite values become their string spelling."""
    if value - value == 0.0:  # false for NaN and ±inf, whose difference is NaN
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_levels(levels: tuple[tuple[float, float], ...]) -> Any:
    """Book levels as JSON can carry them; the common all-finite case allocates nothing."""
    # A finite sum means every term is finite (NaN and ±inf propagate through +); a
    # sum that overflows from finite terms takes the element-wise path, exact anyway.
    total = sum(map(sum, levels))
    if total - total == 0.0:
        return levels
    return [(_json_float(price), _json_float(size)) for price, size in levels]


def _enum_value(member: enum.Enum) -> Any:
    return member.value


def _unstructure_overrides(cls: type, *, json: bool) -> dict[str, Any]:
    tag = TYPE_TAGS[cls]
    overrides: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        hook: Callable[[Any], Any] | None = None
        if hint is int:
            hook = _int64_checker(tag, name, optional=False)
        elif hint == _OPTIONAL_INT:
            hook = _int64_checker(tag, name, optional=True)
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            hook = _enum_value
        elif json and hint is float:
            hook = _json_float
        elif json and hint == _LEVELS:
            hook = _json_levels
        elif hint in (str, bool, float, _STRS, _LEVELS):
            hook = cattrs.fns.identity
        if hook is None:
            raise TypeError(f"codec: no unstructure rule for {cls.__name__}.{name}: {hint!r}")
        overrides[name] = override(unstruct_hook=hook)
    return overrides


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook_func(lambda t: t == _OPTIONAL_INT, _structure_optional_int)
    conv.register_structure_hook_func(lambda t: t == _STRS, _structure_strs)
    conv.register_structure_hook_func(lambda t: t == _LEVELS, _structure_levels)
    for cls in EVENT_TYPES:
        for hint in typing.get_type_hints(cls).values():
            if isinstance(hint, type) and issubclass(hint, enum.Enum):
                # Registered per class: the str hook above would otherwise catch StrEnums.
                conv.register_structure_hook(hint, _enum_structure_hook(hint))
    for cls in EVENT_TYPES:
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv))
        conv.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, conv, **_unstructure_overrides(cls, json=False))
        )
    return conv


#: The strict cattrs converter for every event class. ``converter.unstructure(e)``
#: gives the event's fields as plain Python data (no ``"type"`` tag; floats as they
#: are); ``converter.structure(d, Trade)`` validates as :func:`loads` does but raises
#: cattrs' ``ClassValidationError``. Prefer :func:`to_dict`/:func:`from_dict`.
converter: Final[cattrs.Converter] = _make_converter()

_Unstructure = Callable[[Any], dict[str, Any]]
_Structure = Callable[[Mapping[str, Any], type], Any]

_PLAIN: Final[dict[type, tuple[_Unstructure, str]]] = {
    cls: (converter.get_unstructure_hook(cls), tag) for cls, tag in TYPE_TAGS.items()
}
_JSON: Final[dict[type, tuple[_Unstructure, str]]] = {
    cls: (
        make_dict_unstructure_fn(cls, converter, **_unstructure_overrides(cls, json=True)),
        tag,
    )
    for cls, tag in TYPE_TAGS.items()
}
_BY_TAG: Final[dict[str, tuple[_Structure, type]]] = {
    tag: (converter.get_structure_hook(cls), cls) for cls, tag in TYPE_TAGS.items()
}
_KNOWN_TAGS: Final = ", ".join(TYPE_TAGS.values())


def _not_an_event(event: object) -> CodecError:
    return CodecError(f"cannot encode {_describe(event)}: not an event (one of {_KNOWN_TAGS})")


def dumps(event: Event, *, format: Format = "json") -> bytes:
    """Serialise ``event`` to JSON (default) or msgpack bytes, with its ``"type"`` tag.

    Raises :class:`~puffin_trio.errors.CodecError` if ``event`` is not one of
    :data:`~puffin_trio.events.EVENT_TYPES` or holds something the format cannot
    carry (an integer outside int64, a string with a lone surrogate).
    """
    if format == "json":
        table, encode = _JSON, orjson.dumps
    elif format == "msgpack":
        table, encode = _PLAIN, msgpack.packb
    else:
        raise _unknown_format(format)
    try:
        unstructure, tag = table[type(event)]
    except KeyError:
        raise _not_an_event(event) from None
    obj = unstructure(event)
    obj[_TAG_KEY] = tag
    try:
        return encode(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {tag} event as {format}: {exc}") from exc


def loads(data: bytes | bytearray | memoryview, *, format: Format = "json") -> Event:
    """Parse bytes written by :func:`dumps` (same ``format``) back into an event.

    Raises :class:`~puffin_trio.errors.CodecError`, and only that, for anything
    that is not a valid serialised event (``docs/guide/codec.rst`` lists the rules).
    """
    if format == "json":
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"not valid JSON: {exc}") from exc
    elif format == "msgpack":
        try:
            obj = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CodecError(f"not valid msgpack: {exc}") from exc
    else:
        raise _unknown_format(format)
    if type(obj) is not dict:
        raise CodecError(
            f"expected a map with a {_TAG_KEY!r} tag at the top level, got {_describe(obj)}"
        )
    return _structure(obj)


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a new plain ``dict`` with its ``"type"`` tag (floats as they are).

    Raises :class:`~puffin_trio.errors.CodecError` if ``event`` is not an event or
    holds an integer outside int64.
    """
    try:
        unstructure, tag = _PLAIN[type(event)]
    except KeyError:
        raise _not_an_event(event) from None
    obj = unstructure(event)
    obj[_TAG_KEY] = tag
    return obj


def from_dict(obj: Mapping[str, Any]) -> Event:
    """Validate a mapping shaped like :func:`to_dict`'s output and build the event.

    Same rules as :func:`loads`; ``obj`` is not modified. Raises
    :class:`~puffin_trio.errors.CodecError`.
    """
    if not isinstance(obj, Mapping):
        raise CodecError(f"expected a mapping with a {_TAG_KEY!r} tag, got {_describe(obj)}")
    return _structure(dict(obj))


def _structure(obj: dict[Any, Any]) -> Event:
    """Dispatch on the tag and structure; ``obj`` is ours to mutate."""
    tag = obj.pop(_TAG_KEY, None)
    if tag is None:
        raise CodecError(f"missing {_TAG_KEY!r} tag (one of {_KNOWN_TAGS})")
    entry = _BY_TAG.get(tag) if type(tag) is str else None
    if entry is None:
        raise CodecError(f"unknown {_TAG_KEY!r} tag {_describe(tag)} (one of {_KNOWN_TAGS})")
    structure, cls = entry
    try:
        return structure(obj, cls)  # type: ignore[no-any-return]
    except cattrs.ClassValidationError as exc:
        problems = "; ".join(transform_error(exc, path=tag, format_exception=_format_problem))
        raise CodecError(f"invalid {tag} event: {problems}") from exc


def _format_problem(exc: BaseException, hint: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        names = ", ".join(sorted(repr(name) for name in exc.extra_fields))
        return f"unknown field(s) {names}"
    if isinstance(exc, (TypeError, ValueError)) and exc.args:
        return str(exc)
    return format_exception(exc, hint)


def _unknown_format(format: object) -> ConfigurationError:
    return ConfigurationError(f"unknown codec format {format!r}: use 'json' or 'msgpack'")
