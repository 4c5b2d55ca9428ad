"""The `openai` analyzer: the official `openai` client against OpenAI or any
OpenAI-compatible server (base URL, model, key, timeout, max tokens, temperature from the
service config). The answer must be JSON in the results schema; tokens and cost are kept."""

from __future__ import annotations

import logging

import openai

from analysis_service.analyzers.base import AnalyzerError, AnalyzerOutput, service_unavailable
from analysis_service.analyzers.prompt import build_messages, parse_answer
from analysis_service.config import AIServiceConfig
from analysis_service.inputs import AnalysisInput

logger = logging.getLogger(__name__)


class OpenAIAnalyzer:
    """Chat completions with JSON output. Provider errors become AnalyzerError: rate limits,
    timeouts, connection failures and 5xx are retryable and mark the service unavailable."""

    provider = "openai"

    def __init__(self, name: str, config: AIServiceConfig, templates: dict[str, str]):
        self.name = name
        self.config = config
        self.templates = templates
        self._client = openai.OpenAI(
            api_key=config.resolved_api_key() or "not-set",
            base_url=config.base_url(),
            timeout=config.timeout,
            max_retries=config.max_retries,
        )

    def analyze(self, inp: AnalysisInput) -> AnalyzerOutput:
        cfg = self.config
        try:
            completion = self._client.chat.completions.create(
                model=cfg.model,
                messages=build_messages(inp, self.templates),  # type: ignore[arg-type]
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                response_format={"type": "json_object"},
            )
        except openai.RateLimitError as exc:
            raise service_unavailable(f"AI service rate limit (HTTP 429): {_detail(exc)}") from None
        except openai.APITimeoutError:
            raise service_unavailable(f"AI service timed out after {cfg.timeout}s") from None
        except openai.APIConnectionError as exc:
            raise service_unavailable(f"AI service unreachable: {exc}") from None
        except openai.APIStatusError as exc:
            server_side = exc.status_code >= 500
            raise AnalyzerError(
                f"AI service error (HTTP {exc.status_code}): {_detail(exc)}",
                retryable=server_side,
                unavailable=server_side,
            ) from None
        if not completion.choices:
            raise AnalyzerError("the AI service returned no choices")
        results = parse_answer(completion.choices[0].message.content)
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
        cost = (
            prompt_tokens * cfg.input_cost_per_1k_tokens
            + output_tokens * cfg.output_cost_per_1k_tokens
        ) / 1000
        return AnalyzerOutput(
            results,
            provider="openai",
            model=completion.model or cfg.model,
            version=cfg.version or (completion.system_fingerprint or ""),
            confidence=0.7,
            tokens_used=usage.total_tokens if usage else 0,
            cost=round(cost, 6),
        )


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]
