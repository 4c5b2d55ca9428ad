"""The analyzer interface: one method, `analyze(inp) -> AnalyzerOutput`; failures raise
`AnalyzerError` saying whether a later retry could succeed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from analysis_service.inputs import AnalysisInput


@dataclass(slots=True)
class AnalyzerOutput:
    """Validated `analysis_results` plus what the brief's `ai_service` and
    `analysis_metadata` record about how they were made."""

    results: dict[str, Any]
    provider: str
    model: str
    version: str = ""
    confidence: float = 1.0
    tokens_used: int = 0
    cost: float = 0.0


class AnalyzerError(Exception):
    """An analysis that did not produce results.

    `retryable`: a later attempt may succeed (rate limit, timeout, 5xx). `unavailable`:
    the AI service could not be reached or refused service (the API's 20005).
    """

    def __init__(self, reason: str, *, retryable: bool = False, unavailable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.unavailable = unavailable


def service_unavailable(reason: str) -> AnalyzerError:
    """A retryable failure to reach the AI service (timeout, connection refused)."""
    return AnalyzerError(reason, retryable=True, unavailable=True)


class Analyzer(Protocol):
    """Anything with a provider name and `analyze`."""

    provider: str

    def analyze(self, inp: AnalysisInput) -> AnalyzerOutput:
        """Analyse one request; raise AnalyzerError when no valid results can be given."""
        ...
