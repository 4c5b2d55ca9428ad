"""Analyzers behind one interface: `analyze(AnalysisInput) -> AnalyzerOutput`.

`builtin` (offline rules), `openai` (the official client, any OpenAI-compatible server),
`custom` (POST to an HTTP endpoint). `build_analyzer` picks one from a service config.
"""

from __future__ import annotations

from analysis_service.analyzers.base import Analyzer, AnalyzerError, AnalyzerOutput
from analysis_service.config import AIServiceConfig


def build_analyzer(name: str, config: AIServiceConfig, templates: dict[str, str]) -> Analyzer:
    """The analyzer for a configured service (imports the client only when it is used)."""
    if config.provider == "builtin":
        from analysis_service.analyzers.builtin import BuiltinAnalyzer

        return BuiltinAnalyzer()
    if config.provider == "openai":
        from analysis_service.analyzers.llm import OpenAIAnalyzer

        return OpenAIAnalyzer(name, config, templates)
    from analysis_service.analyzers.custom import CustomHttpAnalyzer

    return CustomHttpAnalyzer(name, config)


__all__ = ["Analyzer", "AnalyzerError", "AnalyzerOutput", "build_analyzer"]
