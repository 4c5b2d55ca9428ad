"""Putting the profile's attributes on a span as it ends.

In opentelemetry-sdk 1.45 ``on_end`` receives an immutable ``ReadableSpan``, and the
``_on_ending`` hook (experimental, called on every processor after ``end()`` has stamped the
end time and frozen the attributes, before any ``on_end``) cannot use the public
``set_attributes`` any more. The processor still attaches its attributes from
``_on_ending``: :func:`write_ending_attributes` writes them into the SDK's own attribute
dict under its lock, with the SDK's rules (the attribute-count limit evicts the oldest, the
value-length limit cuts strings). Every processor's ``on_end`` and exporter sees them,
whatever order the processors were added in, and the span's duration excludes the tree
encoding. Measured per profiled span against the previous way, an override of ``end`` on
the span instance plus ``set_attributes``: ~2-4 µs less for the override (it also made the
instance's ``__dict__`` real, which slows every later attribute read of the span) and ~3 µs
less for the writes (the SDK re-validates each value through ABC instance checks).

Where the SDK does not call ``_on_ending`` from ``Span.end`` or keeps its attributes
elsewhere (:data:`ENDING_HOOK_WORKS` is False), :func:`install_end_hook` overrides ``end``
on the span instance instead and the attributes go through ``set_attributes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span

from otel_pyinstrument_processor.config import DENIED_HEADERS

_logger = logging.getLogger(__name__)

_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
_HEADER_MARK = ".header."  # in every key that _HEADER_PREFIXES matches
REDACTED = "[REDACTED]"
# The longest string value the processor writes besides the tree (the tree format name is
# shorter): under a value-length limit at least this long, no value of ours is cut.
_LONGEST_FIXED_VALUE = 64


def _ending_hook_works() -> bool:
    # Span.end calls the processors' _on_ending, and BoundedAttributes keeps a plain dict
    # and a lock that its own writes use (checked on the code, not on a version number).
    end_calls = getattr(getattr(Span, "end", None), "__code__", None)
    setitem = getattr(BoundedAttributes, "_setitem_locked", None)
    init = getattr(getattr(BoundedAttributes, "__init__", None), "__code__", None)
    return (
        end_calls is not None
        and "_on_ending" in end_calls.co_names
        and setitem is not None
        and init is not None
        and {"_dict", "_lock"} <= set(init.co_names)
    )


ENDING_HOOK_WORKS = _ending_hook_works()
"""True when the processor can attach attributes from ``_on_ending`` (see the module doc)."""


def install_end_hook(span: Span, ending: Callable[[], None]) -> Any:
    """Make ``span.end()`` call ``ending()`` first (the span still records then); return
    what :func:`restore_end` needs to undo it: someone else's instance override, or None."""
    previous = vars(span).get("end")
    original_end = span.end

    def end(end_time: int | None = None) -> None:
        if end_time is None:
            # Stamp the end now so the span's duration excludes the tree encoding.
            end_time = time.time_ns()
        ending()
        original_end(end_time)

    span.end = end  # type: ignore[method-assign]
    return previous


def restore_end(span: Span, previous: Any) -> None:
    """Undo :func:`install_end_hook` (``previous`` is what it returned)."""
    if previous is not None:
        span.end = previous  # type: ignore[method-assign]
    else:
        vars(span).pop("end", None)


def attribute_cap(span: Span, max_bytes: int) -> int:
    """The longest string attribute the span keeps whole, at most ``max_bytes``.

    The SDK silently cuts string attributes at the span limits' value length, which would
    corrupt the base64 text: encode under that limit instead. (``_limits`` is the SDK's own
    field; read defensively.)
    """
    limit = getattr(getattr(span, "_limits", None), "max_span_attribute_length", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return min(max_bytes, limit)
    return max_bytes


def own_attributes(span: ReadableSpan) -> Mapping[str, Any] | None:
    """The span's attributes as a plain mapping, to read and never write: the SDK's own
    dict where it can be reached, else the public ``attributes``.

    The public property wraps the SDK's ``BoundedAttributes`` in a read-only proxy (~1 µs),
    and ``BoundedAttributes.get`` is ``Mapping.get``, which raises and catches a
    ``KeyError`` on every miss (~1 µs each); the processor looks up several attributes
    that most spans lack (``db.system``, ``cache.hit``, ``pystrument.profile``)."""
    attributes = getattr(span, "_attributes", None)
    if attributes is None:
        return span.attributes
    plain = getattr(attributes, "_dict", None)
    return plain if isinstance(plain, dict) else attributes


def redacted_headers(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Overwrites for captured credential headers among ``attributes`` (the
    instrumentations were told not to capture them; this catches an allow-list set
    elsewhere). ``attributes`` is best a plain mapping (see :func:`own_attributes`)."""
    if not attributes:
        return {}
    # One substring test over the joined keys is ~4x cheaper than a startswith per key,
    # and most spans capture no header at all.
    keys = list(attributes)
    if _HEADER_MARK not in "\n".join(keys):
        return {}
    redacted: dict[str, str] = {}
    for key in [key for key in keys if key.startswith(_HEADER_PREFIXES)]:
        name = key.rsplit(".", 1)[1].replace("_", "-")
        if name in DENIED_HEADERS:
            redacted[key] = REDACTED
    return redacted


# Attribute keys seen on ending spans that are not header attributes: most spans carry
# the same few keys, so telling that a span captured no header is one C call over its keys
# (~0.2 µs) rather than a join and a search (~0.5 µs). Bounded: cleared when full.
_PLAIN_KEYS: set[str] = set()
_MAX_PLAIN_KEYS = 4096


def _may_hold_headers(plain: dict[str, Any]) -> bool:
    """Whether some key of ``plain`` is a header attribute; remembers the keys when none
    is (see :data:`_PLAIN_KEYS`)."""
    if _HEADER_MARK in "\n".join(plain):
        return True
    if len(_PLAIN_KEYS) + len(plain) > _MAX_PLAIN_KEYS:
        _PLAIN_KEYS.clear()
    _PLAIN_KEYS.update(plain)
    return False


def write_ending_attributes(span: Span, attributes: dict[str, Any], tree_key: str) -> bool:
    """Write ``attributes`` (plus credential-header redactions) into the attributes of
    ``span`` while it ends (from ``_on_ending``, when the SDK has frozen them), with the
    SDK's limits: past the attribute-count limit the oldest attribute is dropped and counted
    as the SDK does, strings are cut at the value-length limit. The values must already be
    valid attribute values (the processor makes only str, bool, int and float). True when
    the span kept the value under ``tree_key`` (or there was none). Falls back to
    :func:`set_profile_attributes` when the span's attributes are not the SDK's own."""
    try:
        bounded = span._attributes
        plain = bounded._dict  # type: ignore[union-attr]
    except AttributeError:
        return set_profile_attributes(span, attributes, tree_key)
    # type() rather than isinstance(): BoundedAttributes is an ABC, and an ABC instance
    # check costs ~1 µs here.
    if type(bounded) is not BoundedAttributes or type(plain) is not dict:
        return set_profile_attributes(span, attributes, tree_key)
    if not _PLAIN_KEYS.issuperset(plain) and _may_hold_headers(plain):
        attributes.update(redacted_headers(plain))
    maxlen, max_length = bounded.maxlen, bounded.max_value_len
    if maxlen == 0:  # the SDK keeps no attribute at all: count them as dropped
        with bounded._lock:
            bounded.dropped += len(attributes)
        return tree_key not in attributes
    with bounded._lock:
        if (maxlen is None or len(plain) + len(attributes) <= maxlen) and (
            max_length is None or max_length >= _LONGEST_FIXED_VALUE
        ):
            # The common case, one C call: room for every value, and no string that the
            # value-length limit would cut (the tree is encoded under that limit, see
            # attribute_cap; the processor's other strings are short constants).
            plain.update(attributes)
        else:
            for key, value in attributes.items():
                if max_length is not None and type(value) is str and len(value) > max_length:
                    value = value[:max_length]
                if key not in plain and maxlen is not None and len(plain) >= maxlen:
                    # What BoundedAttributes does, warning included.
                    bounded._setitem_locked(key, value)
                else:
                    plain[key] = value
    tree = attributes.get(tree_key)
    return tree is None or plain.get(tree_key) is tree


def set_profile_attributes(span: Span, attributes: dict[str, Any], tree_key: str) -> bool:
    """Set ``attributes`` (plus credential-header redactions) on ``span``; True when the span
    kept the value under ``tree_key`` (or there was none), False when it dropped it (e.g. the
    span was already at its attribute-count limit). Raises what the SDK raises."""
    attributes.update(redacted_headers(own_attributes(span)))
    span.set_attributes(attributes)
    tree = attributes.get(tree_key)
    if tree is None:
        return True
    kept = (span.attributes or {}).get(tree_key)
    return kept is tree or kept == tree
