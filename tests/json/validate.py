"""Validates coffer's JSON output against its checked-in schema.

    python3 tests/json/validate.py SCHEMA [--lines] < OUTPUT

One document on stdin, or with --lines one document per line (apply
--json's events). Draft-07, with formats checked (date-time). Prints every
error and exits 1 when there is one.
"""
import json
import sys

import jsonschema

schema_path = sys.argv[1]
lines = "--lines" in sys.argv[2:]
with open(schema_path) as f:
    schema = json.load(f)
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(
    schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
)
text = sys.stdin.read()
docs = [json.loads(l) for l in text.splitlines() if l.strip()] if lines else [json.loads(text)]
if not docs:
    print("no document on stdin")
    sys.exit(1)
bad = 0
for n, doc in enumerate(docs, 1):
    for e in validator.iter_errors(doc):
        bad += 1
        where = "/".join(str(p) for p in e.absolute_path)
        print(f"document {n}: at /{where}: {e.message}")
sys.exit(1 if bad else 0)
