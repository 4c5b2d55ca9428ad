"""The REST API under /api/v1: one router per resource, all answering in the envelope."""
