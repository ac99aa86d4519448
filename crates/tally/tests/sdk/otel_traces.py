"""Exports spans to a running Tally with the official OpenTelemetry Python SDK and its OTLP/HTTP
exporter (protobuf, then gzip), including a re-export of the same spans.

Usage: python otel_traces.py BASE_URL API_KEY
"""
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

base, key = sys.argv[1], sys.argv[2]
endpoint = f"{base}/v1/otlp/v1/traces"
headers = {"Authorization": f"Bearer {key}"}

memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "chat", "tally.organization_id": "acme"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("tally-sdk-test")

with tracer.start_as_current_span("chat gpt-4o") as span:
    span.set_attributes({
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
        "user.id": "ann",
    })
with tracer.start_as_current_span("chat claude") as span:
    # The older conventions, and a failure.
    span.set_attributes({
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 20,
        "error.type": "timeout",
        "user.id": "bob",
    })
    span.set_status(Status(StatusCode.ERROR))
with tracer.start_as_current_span("GET /health") as span:
    span.set_attribute("http.request.method", "GET")

spans = memory.get_finished_spans()
assert len(spans) == 3, spans
plain = OTLPSpanExporter(endpoint=endpoint, headers=headers)
assert plain.export(spans) == SpanExportResult.SUCCESS
# A retry of the same export: counted once.
assert plain.export(spans) == SpanExportResult.SUCCESS
gzipped = OTLPSpanExporter(endpoint=endpoint, headers=headers, compression=Compression.Gzip)
assert gzipped.export(spans[:1]) == SpanExportResult.SUCCESS
print("exported")
