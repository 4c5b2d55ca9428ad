"""The brief's `analysis_results` schema (section 3.2), as a validator.

Every analyzer's output, and above all an LLM's or a custom service's, passes through
`validate_results` before it is stored: a response that does not fit is a failed analysis
with the validation errors as its reason, never a half-filled document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError


class Bottleneck(BaseModel):
    type: Literal["database", "computation", "io", "memory"]
    severity: Literal["critical", "high", "medium", "low"]
    function: str
    description: str
    impact: float = Field(ge=0, le=1, description="share of the request's time")


class Suggestion(BaseModel):
    category: Literal["database", "caching", "algorithm", "architecture"]
    priority: Literal["high", "medium", "low"]
    title: str
    description: str
    code_example: str = ""
    expected_improvement: str = ""


class RiskAssessment(BaseModel):
    current_risks: list[str] = Field(default_factory=list)
    potential_issues: list[str] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)


class AnalysisResults(BaseModel):
    performance_score: float = Field(ge=0, le=100)
    bottleneck_analysis: list[Bottleneck]
    optimization_suggestions: list[Suggestion]
    risk_assessment: RiskAssessment


class InvalidResultsError(ValueError):
    """The output does not fit the schema; the message lists what is wrong."""


def validate_results(data: Any) -> dict[str, Any]:
    """Return `data` as a clean schema-conforming dict, or raise InvalidResultsError."""
    if not isinstance(data, dict):
        raise InvalidResultsError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return AnalysisResults.model_validate(data).model_dump()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:8]
        )
        raise InvalidResultsError(f"analysis results do not match the schema: {problems}") from None


def results_json_schema() -> dict[str, Any]:
    """The JSON schema shown to an LLM so it knows the shape to answer in."""
    return AnalysisResults.model_json_schema()
