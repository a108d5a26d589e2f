"""The objects of a `helm get manifest` output, one line per namespace:
NAMESPACE KIND.GROUP/NAME ... (objects without a namespace get DEFAULT_NS).

  manifest_refs.py MANIFEST DEFAULT_NS

Standard library only: helm writes each object's apiVersion, kind,
metadata.name and metadata.namespace at fixed indentation.
"""

import re
import sys

by_ns = {}
for doc in open(sys.argv[1]).read().split("\n---\n"):
    kind = re.search(r"^kind: *(\S+)", doc, re.M)
    if not kind:
        continue
    name = re.search(r"^  name: *(\S+)", doc, re.M).group(1).strip('"')
    ns = re.search(r"^  namespace: *(\S+)", doc, re.M)
    api = re.search(r"^apiVersion: *(\S+)", doc, re.M).group(1)
    group = api.split("/")[0] if "/" in api else ""
    ref = f"{kind.group(1)}.{group}/{name}" if group else f"{kind.group(1)}/{name}"
    by_ns.setdefault(ns.group(1).strip('"') if ns else sys.argv[2], []).append(ref)
for ns, refs in by_ns.items():
    print(ns, " ".join(refs))
