"""Schemathesis hooks for tests/api/test_fuzz.py (loaded by the schemathesis CLI, not by pytest).

The ingest route also takes NDJSON (its schema: a string, one document per line); schemathesis
ships no serializer for that media type, so the generated string goes on the wire as is.
"""

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    return {"data": value if isinstance(value, bytes) else str(value).encode("utf-8")}
