"""The example Collector configurations. There is no otelcol binary here, so this checks what
can be checked without one: the YAML parses, every component a pipeline names is defined,
memory_limiter comes first, and the pystrument exporter authenticates with the bearer token
and compresses (the receiver side of that is tested with real exporters elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).parents[2] / "examples" / "collector"


@pytest.mark.parametrize("name", ["otelcol.yaml", "otelcol-fanout.yaml"])
def test_collector_config_is_consistent(name):
    config = yaml.safe_load((EXAMPLES / name).read_text())
    service = config["service"]
    for extension in service["extensions"]:
        assert extension in config["extensions"]
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline_name.split("/")[0] == "traces"
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{component} is not defined"
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"
        assert "otlp/pystrument" in pipeline["exporters"]
    exporter = config["exporters"]["otlp/pystrument"]
    assert exporter["auth"]["authenticator"] == "bearertokenauth/pystrument"
    assert exporter["compression"] == "gzip"
    assert config["extensions"]["bearertokenauth/pystrument"]["token"] == (
        "${env:PYSTRUMENT_PROJECT_KEY}"
    )
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_fanout_sends_to_pystrument_and_another_backend():
    config = yaml.safe_load((EXAMPLES / "otelcol-fanout.yaml").read_text())
    (pipeline,) = config["service"]["pipelines"].values()
    assert len(pipeline["exporters"]) == 2
    for exporter in pipeline["exporters"]:
        assert config["exporters"][exporter]["sending_queue"]["enabled"] is True
