#!/usr/bin/env python3
"""Writes `count` synthetic usage events from number `first` on, as NDJSON on standard output:
the shape of `tally bench ingest` (2,000 organizations, 200,000 users, the last 90 days, one
event in five an LLM request). Files for the import figures in BENCHMARKS.md:

    python3 docs/bench/events.py 0 1000000 > part0.ndjson
    python3 docs/bench/events.py 1000000 1000000 > part1.ndjson   # and so on
"""
import datetime
import random
import sys
import time

first, count = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(42 ^ first)
start = int(time.time()) - 90 * 86400
types = ["api_call", "submission", "storage_bytes", "asr_seconds", "mt_characters", "login"]
out = sys.stdout
for i in range(first, first + count):
    user = rng.randrange(200000)
    org, team = user % 2000, user % 7
    at = datetime.datetime.fromtimestamp(start + rng.randrange(90 * 86400), datetime.timezone.utc)
    ts = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    head = '{"id":"b%d","timestamp":"%s","organization_id":"org%d","user_id":"u%d","team_id":"t%d"' % (i, ts, org, user, team)
    if i % 5 == 0:
        status = "error" if i % 23 == 0 else "success"
        out.write(
            '%s,"type":"llm_request","model":"gpt-4o-mini","provider":"openai","status":"%s","input_tokens":%d,'
            '"output_tokens":%d,"cost":"0.000%d","latency_ms":%d}\n'
            % (head, status, rng.randrange(10, 4000), rng.randrange(0, 1500), rng.randrange(100, 999), rng.randrange(100, 5000))
        )
    else:
        out.write('%s,"type":"%s","quantity":%d}\n' % (head, types[i % 6], rng.randrange(1, 100)))
