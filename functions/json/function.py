"""json (MITOSIS): parse and serialise a ~150 KB JSON document.

Initialisation reads the document (functions/data/json/linux.json, made by
gen_inputs.py); the handler parses it with json.loads, serialises it again
with json.dumps and prints a digest of the serialised text.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import json
import os


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
with open(os.path.join(DATA, 'json', 'linux.json')) as f:
    TEXT = f.read()


@tick_execution_time
def handler():
    doc = json.loads(TEXT)
    out = json.dumps(doc, sort_keys=True)
    assert json.loads(out) == doc
    digest = hashlib.sha256(out.encode()).hexdigest()[:16]
    print(f"result: {len(doc)} records, {len(out)} chars, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
