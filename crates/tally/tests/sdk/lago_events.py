"""Drives Tally's Lago-compatible ingestion with Lago's official Python client.

Usage: lago_events.py BASE_URL API_KEY. Exits non-zero (with a traceback) on any failure.
"""
import sys

from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BatchEvent, Event

base, key = sys.argv[1], sys.argv[2]
client = Client(api_key=key, api_url=base.rstrip("/") + "/compat/lago/")


def event(tid, code="api_call", quantity=1, sub="sub-acme", **extra):
    return Event(
        transaction_id=tid,
        external_subscription_id=sub,
        code=code,
        timestamp=1735732800,
        properties={"quantity": quantity, "user_id": "u1", **extra},
    )


created = client.events.create(event("t1", quantity=3))
assert created.transaction_id == "t1", created
assert created.code == "api_call", created
# An exact replay succeeds (Lago would answer 422) and is not counted twice.
client.events.create(event("t1", quantity=3))
client.events.batch_create(BatchEvent(events=[event("t2", quantity=4), event("t3", code="submission", quantity=2), event("t1", quantity=3)]))

for bad, status in [(event("t4", sub="no-such-subscription"), 404), (event("t5", code="no_such_metric"), 422)]:
    try:
        client.events.create(bad)
    except LagoApiError as e:
        assert e.status_code == status, (e.status_code, e.response)
    else:
        raise AssertionError(f"{bad} was accepted")

# A batch with one bad event stores none of them.
try:
    client.events.batch_create(BatchEvent(events=[event("t6"), event("t7", code="no_such_metric")]))
except LagoApiError as e:
    assert e.status_code == 422, e.status_code
else:
    raise AssertionError("a batch with an unknown code was accepted")
print("ok")
