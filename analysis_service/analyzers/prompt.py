"""The compact prompt an LLM analyzer sends: the summary (hot paths, slow functions,
metrics, repeated DB statements), never the raw call tree; and parsing its JSON answer."""

from __future__ import annotations

import json
import re
from typing import Any

from analysis_service.analyzers.base import AnalyzerError
from analysis_service.inputs import AnalysisInput
from analysis_service.result_schema import InvalidResultsError, validate_results

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def build_messages(inp: AnalysisInput, templates: dict[str, str]) -> list[dict[str, str]]:
    """System and user messages: the task, the required JSON shape, the compact data."""
    shape = {
        "performance_score": "0-100",
        "bottleneck_analysis": [
            {
                "type": "database|computation|io|memory",
                "severity": "critical|high|medium|low",
                "function": "name",
                "description": "text",
                "impact": "0-1 share of the request time",
            }
        ],
        "optimization_suggestions": [
            {
                "category": "database|caching|algorithm|architecture",
                "priority": "high|medium|low",
                "title": "text",
                "description": "text",
                "code_example": "python code",
                "expected_improvement": "text",
            }
        ],
        "risk_assessment": {
            "current_risks": ["text"],
            "potential_issues": ["text"],
            "recommendations": ["text"],
        },
    }
    system = (
        templates.get("performance_analysis", "")
        + "\nAnswer with one JSON object only, exactly in this shape:\n"
        + json.dumps(shape)
    )
    user = json.dumps(inp.summary(), default=str, separators=(",", ":"))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_answer(text: str | None) -> dict[str, Any]:
    """The validated results in an LLM's answer; AnalyzerError naming what is wrong."""
    if not text or not text.strip():
        raise AnalyzerError("the AI service returned an empty answer")
    body = _FENCE.sub("", text.strip())
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AnalyzerError(f"the AI service's answer is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("analysis_results"), dict):
        data = data["analysis_results"]
    try:
        return validate_results(data)
    except InvalidResultsError as exc:
        raise AnalyzerError(str(exc)) from None
