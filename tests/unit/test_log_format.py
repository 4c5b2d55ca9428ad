"""Structured (JSON) log lines."""

from __future__ import annotations

import json
import logging

from pystrument.log_format import JsonFormatter


def test_json_lines_carry_extra_fields_and_exceptions():
    record = logging.makeLogRecord(
        {
            "name": "collector_receiver.ingest",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "%d span(s) rejected",
            "args": (2,),
            "project_id": "prj_1",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "2 span(s) rejected"
    assert line["level"] == "INFO" and line["logger"] == "collector_receiver.ingest"
    assert line["project_id"] == "prj_1"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]
