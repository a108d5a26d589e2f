"""Reads a topic with confluent-kafka (a consumer group, from the earliest
offset) and validates every record's value against the event JSON Schema.

Usage: consume_validate.py BOOTSTRAP TOPIC EXPECTED SCHEMA TIMEOUT_S
Prints one JSON object on stdout: {"records": [...], "schema_ok": true}.
Each record: partition, offset, key, id, type, ce_id, errors (list of
schema violations, empty when valid). Run by tests/it/contract.rs.
"""
import json
import sys
import time

import jsonschema
from confluent_kafka import Consumer, KafkaError


def main():
    bootstrap, topic, expected, schema_path, timeout_s = sys.argv[1:6]
    expected, timeout_s = int(expected), float(timeout_s)
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "contract-python-" + topic,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume error: {msg.error()}")
            headers = {k: (v or b"").decode("utf-8") for k, v in (msg.headers() or [])}
            try:
                event = json.loads(msg.value().decode("utf-8"))
                errors = [f"{e.message} at /{'/'.join(map(str, e.absolute_path))}"
                          for e in validator.iter_errors(event)]
            except ValueError as e:
                event, errors = {}, [f"value is not JSON: {e}"]
            records.append({
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": msg.key().decode("utf-8") if msg.key() is not None else None,
                "id": event.get("id"),
                "type": event.get("type"),
                "ce_id": headers.get("ce_id"),
                "errors": errors,
            })
    finally:
        consumer.close()
    json.dump({"records": records, "schema_ok": True}, sys.stdout)


if __name__ == "__main__":
    main()
