// Sends spans to a pystrument receiver with the Node.js OpenTelemetry SDK's own OTLP
// exporters (the interop test runs this with node; nothing here is pystrument code).
//
//   node send.js grpc|http <endpoint> <traces>
//
// The project key comes the way users pass it: OTEL_EXPORTER_OTLP_HEADERS
// ("authorization=Bearer <key>"); OTEL_EXPORTER_OTLP_COMPRESSION=gzip compresses.
// Prints one JSON line: the export result code and every span sent (ids, kind, attributes).
"use strict";

const { SpanKind, SpanStatusCode, context, trace } = require("@opentelemetry/api");
const {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} = require("@opentelemetry/sdk-trace-base");
const { resourceFromAttributes } = require("@opentelemetry/resources");

const [protocol, endpoint, tracesArg] = process.argv.slice(2);
const traces = Number(tracesArg || "3");

const exporterModule =
  protocol === "grpc"
    ? require("@opentelemetry/exporter-trace-otlp-grpc")
    : require("@opentelemetry/exporter-trace-otlp-proto");
const url = protocol === "grpc" ? endpoint : `${endpoint}/v1/traces`;
const otlp = new exporterModule.OTLPTraceExporter({ url });

const memory = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({
    "service.name": "node-checkout",
    "service.version": "3.4.5",
    "telemetry.sdk.language": "nodejs",
  }),
  spanProcessors: [new SimpleSpanProcessor(memory)],
});
const tracer = provider.getTracer("interop-node", "1.0.0");

for (let i = 0; i < traces; i++) {
  const server = tracer.startSpan(`POST /orders/:id`, {
    kind: SpanKind.SERVER,
    attributes: {
      "http.request.method": "POST",
      "http.route": "/orders/:id",
      "url.path": `/orders/${i}`,
      "http.response.status_code": 201,
      "node.flag": true,
      "node.ratio": 0.25,
      "node.tags": ["a", "b"],
    },
  });
  const ctx = trace.setSpan(context.active(), server);
  const query = tracer.startSpan("SELECT orders", {
    kind: SpanKind.CLIENT,
    attributes: { "db.system": "postgresql", "db.statement": "SELECT * FROM orders WHERE id=$1" },
  }, ctx);
  query.addEvent("rows", { count: 3 });
  query.end();
  const render = tracer.startSpan("render", { kind: SpanKind.INTERNAL }, ctx);
  render.setStatus({ code: SpanStatusCode.ERROR, message: "template missing" });
  render.end();
  server.end();
}

const spans = memory.getFinishedSpans();
otlp.export(spans, (result) => {
  const sent = spans.map((s) => ({
    trace_id: s.spanContext().traceId,
    span_id: s.spanContext().spanId,
    parent_span_id: s.parentSpanContext ? s.parentSpanContext.spanId : null,
    name: s.name,
    kind: s.kind,
    attributes: s.attributes,
  }));
  process.stdout.write(
    JSON.stringify({ code: result.code, error: result.error ? String(result.error) : null, spans: sent }) + "\n",
  );
  otlp.shutdown().then(() => process.exit(result.code === 0 ? 0 : 1));
});
