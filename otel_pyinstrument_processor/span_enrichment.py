"""Putting the profile's attributes on a span before the span ends.

In opentelemetry-sdk 1.45 ``on_end`` receives an immutable ``ReadableSpan`` and the
experimental ``_on_ending`` hook runs after the attributes are frozen, so neither can add
attributes. DESIGN.md suggests wrapping the downstream processor/exporter and forwarding an
enriched copy, but that only reaches the processors the user remembered to wrap. Instead,
:func:`install_end_hook` overrides ``end`` on the profiled span *instance* (``Span.end`` is a
plain method and ``Span.__exit__``/``use_span`` call ``self.end()``): the override stops the
profiler, sets the attributes with the public ``set_attributes`` while the span still
records, then calls the original ``end``. Every processor and exporter sees the tree,
whatever order they were added in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span

from otel_pyinstrument_processor.config import DENIED_HEADERS

_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
_HEADER_MARK = ".header."  # in every key that _HEADER_PREFIXES matches
REDACTED = "[REDACTED]"


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
