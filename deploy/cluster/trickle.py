"""A trickle of signed callbacks, sent the way a Service would spread them:
each to a ready endpoint of the chart's Service, read from its EndpointSlices
(no kube-proxy here), and a check that every acknowledged one reached Kafka.

  trickle.py send ENDPOINTS_CMD STOP_FILE OUT.json [--rate N] [--token T]
      Sends Group.CallbackAfterSendMsg callbacks, each with a unique marker in
      CloudCustomData, until STOP_FILE exists; ENDPOINTS_CMD (a shell command)
      prints the ready endpoint IPs, one a line, and is rerun every 0.5 s.
      Writes {"sent", "acked": [markers], "failed": [[marker, error]]}.
  trickle.py verify OUT.json KAFKA_DUMP
      Counts the acknowledged markers found in KAFKA_DUMP (kcat's output of
      the topic); exits 1 if one is missing.

Standard library only; every request has a 3 s timeout.
"""

import hashlib
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

APP = "1400000001"
COMMAND = "Group.CallbackAfterSendMsg"
FIXTURE = Path(__file__).resolve().parents[2] / "tests/fixtures/callbacks/Group.CallbackAfterSendMsg.json"


def send(endpoints_cmd, stop_file, out, rate, token):
    body = json.loads(FIXTURE.read_text())
    run = f"{random.getrandbits(32):08x}"
    endpoints, lock = [], threading.Lock()
    done = threading.Event()

    def refresh():
        while not done.is_set():
            try:
                ips = subprocess.run(endpoints_cmd, shell=True, capture_output=True, text=True, timeout=5).stdout.split()
                with lock:
                    endpoints[:] = ips
            except subprocess.TimeoutExpired:
                pass
            done.wait(0.5)

    threading.Thread(target=refresh, daemon=True).start()
    acked, failed, n, seen = [], [], 0, set()
    deadline = time.time() + 600
    while not Path(stop_file).exists() and time.time() < deadline:
        with lock:
            ips = list(endpoints)
        if not ips:
            time.sleep(0.1)
            continue
        ip = ips[n % len(ips)]
        seen.add(ip)
        marker = f"ckb-trickle-{run}-{n:06d}"
        n += 1
        body["CloudCustomData"] = marker
        body["MsgSeq"] = n
        t = str(int(time.time()))
        sign = hashlib.sha256((token + t).encode()).hexdigest()
        url = f"http://{ip}:8080/callback?SdkAppid={APP}&CallbackCommand={COMMAND}&contenttype=json&RequestTime={t}&Sign={sign}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                answer = json.loads(r.read())
            if r.status == 200 and answer.get("ActionStatus") == "OK":
                acked.append(marker)
            else:
                failed.append([marker, f"{ip}: {r.status} {answer}"])
        except (urllib.error.URLError, OSError, ValueError) as e:
            failed.append([marker, f"{ip}: {e}"])
        time.sleep(1 / rate)
    done.set()
    Path(out).write_text(json.dumps({"sent": n, "acked": acked, "failed": failed, "endpoints": sorted(seen)}))


def verify(out, dump):
    result = json.loads(Path(out).read_text())
    text = Path(dump).read_text()
    acked = result["acked"]
    missing = [m for m in acked if m not in text]
    counts = [text.count(f'{m}') for m in acked]
    dupes = sum(1 for c in counts if c > 1)
    print(f"trickle: sent {result['sent']} to {len(result['endpoints'])} pod IPs, acknowledged {len(acked)}, "
          f"not acknowledged {len(result['failed'])}, acknowledged but missing from Kafka {len(missing)}, "
          f"delivered twice {dupes}")
    for m, e in result["failed"][:5]:
        print(f"  not acknowledged: {m}: {e}")
    if missing:
        print(f"FAIL {len(missing)} acknowledged callbacks are not in Kafka, e.g. {missing[:5]}", file=sys.stderr)
        sys.exit(1)
    if not acked:
        print("FAIL nothing was acknowledged", file=sys.stderr)
        sys.exit(1)


def main():
    a = sys.argv[1:]
    if a[:1] == ["send"]:
        rate = float(a[a.index("--rate") + 1]) if "--rate" in a else 20.0
        token = a[a.index("--token") + 1] if "--token" in a else "cluster-test-token"
        send(a[1], a[2], a[3], rate, token)
    elif a[:1] == ["verify"]:
        verify(a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
