"""pystrument's storage: MongoDB schema, repositories, queries and the embedded server.

Knows nothing of gRPC, HTTP or Streamlit: the receiver, the analysis service and the UI all
read and write through here.
"""

from storage_backend.errors import (
    InvalidDocumentError,
    ProjectNameExistsError,
    ProjectNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from storage_backend.models import (
    AlertThreshold,
    IngestResult,
    Project,
    ProjectConfig,
    ResourceSpans,
    SpanData,
)
from storage_backend.store import Store, StoreSettings
from storage_backend.trace_spans import trace_spans

__all__ = [
    "AlertThreshold",
    "IngestResult",
    "InvalidDocumentError",
    "Project",
    "ProjectConfig",
    "ProjectNameExistsError",
    "ProjectNotFoundError",
    "ResourceSpans",
    "SpanData",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoreUnavailableError",
    "trace_spans",
]
