"""Parses deploy/asyncapi.yaml and checks what a YAML parser alone cannot:
AsyncAPI 3.0, every local $ref resolves, and the payload's external $ref
names the event JSON Schema file, which is valid draft 2020-12.

Usage: check_asyncapi.py ASYNCAPI_YAML. Prints a JSON summary on stdout;
exits non-zero with a message on the first problem. Run by tests/it/contract.rs.
"""
import json
import os
import sys

import jsonschema
import yaml


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}/{i}")


def resolve(doc, pointer):
    node = doc
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError(pointer)
        node = node[part]
    return node


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert doc.get("asyncapi") == "3.0.0", f"asyncapi version is {doc.get('asyncapi')!r}"
    external = []
    for where, ref in walk(doc):
        if ref.startswith("#"):
            try:
                resolve(doc, ref[1:])
            except KeyError:
                sys.exit(f"{where}: $ref {ref} does not resolve")
        else:
            target = os.path.join(os.path.dirname(path), ref)
            if not os.path.isfile(target):
                sys.exit(f"{where}: $ref {ref} names no file")
            with open(target, encoding="utf-8") as f:
                schema = json.load(f)
            jsonschema.Draft202012Validator.check_schema(schema)
            external.append(ref)
    summary = {
        "channels": {name: ch["address"] for name, ch in doc["channels"].items()},
        "external_refs": external,
        "event_headers": sorted(doc["components"]["schemas"]["eventHeaders"]["required"]),
        "dead_letter_headers": sorted(doc["components"]["schemas"]["deadLetterHeaders"]["required"]),
        "dead_letter_reasons": doc["components"]["schemas"]["deadLetterHeaders"]["properties"]["bridge_reason"]["enum"],
    }
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
