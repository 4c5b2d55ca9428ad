"""pystrument's analysis service: workers that claim jobs from `storage_backend`'s queue and
run them (analyze, batch_analyze, report, cleanup), the analyzers (builtin rules, the
`openai` client, a custom HTTP endpoint), reports and scheduling.

Depends on `storage_backend` (and the processor's call-tree decoder) only; the receiver,
REST API and UI enqueue jobs through `storage_backend` without importing this package.
"""

from analysis_service.config import AIServiceConfig, AnalysisSettings
from analysis_service.worker import Worker

__all__ = ["AIServiceConfig", "AnalysisSettings", "Worker"]
