"""The `custom` analyzer: POST the compact analysis input as JSON to a configured endpoint
with configured headers; the answer (the results object, or `{"analysis_results": ...}`)
goes through the same schema validation as an LLM's."""

from __future__ import annotations

import json

import httpx

from analysis_service.analyzers.base import AnalyzerError, AnalyzerOutput, service_unavailable
from analysis_service.analyzers.prompt import parse_answer
from analysis_service.config import AIServiceConfig
from analysis_service.inputs import AnalysisInput


class CustomHttpAnalyzer:
    """One POST per analysis. 429/5xx/timeouts are retryable; other statuses are not."""

    provider = "custom"

    def __init__(self, name: str, config: AIServiceConfig):
        self.name = name
        self.config = config

    def analyze(self, inp: AnalysisInput) -> AnalyzerOutput:
        cfg = self.config
        assert cfg.endpoint  # the config validator requires it
        try:
            resp = httpx.post(
                cfg.endpoint,
                content=json.dumps({"analysis_input": inp.summary()}, default=str),
                headers={"content-type": "application/json", **cfg.resolved_headers()},
                timeout=cfg.timeout,
            )
        except httpx.TimeoutException:
            raise service_unavailable(f"AI service timed out after {cfg.timeout}s") from None
        except httpx.HTTPError as exc:
            raise service_unavailable(f"AI service unreachable: {exc}") from None
        if resp.status_code >= 400:
            transient = resp.status_code == 429 or resp.status_code >= 500
            raise AnalyzerError(
                f"AI service error (HTTP {resp.status_code}): {resp.text[:300]}",
                retryable=transient,
                unavailable=transient,
            )
        results = parse_answer(resp.text)
        return AnalyzerOutput(
            results, provider="custom", model=cfg.model, version=cfg.version, confidence=0.7
        )
