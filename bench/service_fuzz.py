"""Attacks a running `isco-dag serve` the way a careless or hostile client would, and reports
what the service answered and how much memory it took. Loopback only; every loop is bounded
in count and time and the script stops by itself.

    python3 bench/service_fuzz.py --addr 127.0.0.1:PORT --pid PID [--seconds 30]

Phases:
1. random bodies: random bytes, random content types, to every endpoint;
2. oversized fields: titles and duties past `max_field_chars`, bodies past `json_max_bytes`;
3. flood: for --seconds, 8 connections send the largest request the service accepts
   (`/predict/batch` at `json_max_bytes` minus a margin, every field at the limit,
   `explain` on the single-record endpoint), back to back;
4. slow clients: 300 connections that send half a header and stop; /health is timed while
   they are open, and how many the server closes within header_timeout_seconds + 2 s.
Peak resident memory of the server process is sampled every 50 ms throughout (VmRSS) and
read from the kernel's high-water mark (VmHWM) at the end.
"""

import argparse
import json
import random
import socket
import threading
import time
from collections import Counter


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def request(addr, method, path, body=b"", content_type="application/json", timeout=60):
    """One request on its own connection; returns the status code (0: no answer)."""
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        s.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            data += chunk
        status = int(data.split(b" ", 2)[1])
        # Drain the answer so the server is measured writing it too.
        while s.recv(65536):
            pass
        return status
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        s.close()


def cls(status):
    return f"{status // 100}xx" if status else "no answer"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-field-chars", type=int, default=20000)
    ap.add_argument("--json-max-bytes", type=int, default=16 << 20)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    peak = [rss_kb(a.pid)]
    start_rss = peak[0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_kb(a.pid))
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    endpoints = [
        ("POST", "/predict/job"),
        ("POST", "/predict/batch"),
        ("POST", "/predict/csv"),
        ("POST", "/review/decision"),
        ("POST", "/review/skip"),
        ("GET", "/review/queue?limit=" + "9" * 30),
        ("GET", "/review/search?q=" + "x" * 5000),
    ]
    types = ["application/json", "text/plain", "multipart/form-data; boundary=x", "text/csv", ""]
    report = {}

    # 1. Random bodies.
    seen = Counter()
    for _ in range(2000):
        method, path = rnd.choice(endpoints)
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 50, 2000])))
        seen[cls(request(a.addr, method, path, body, rnd.choice(types)))] += 1
    report["random bodies"] = dict(seen)

    # 2. Oversized fields and bodies.
    seen = Counter()
    long = "cook " * (a.max_field_chars // 5 + 1)
    for _ in range(50):
        for body in (
            {"job_title": long, "explain": True},
            {"job_title": "chef", "duties_description": long, "explain": True},
        ):
            seen[cls(request(a.addr, "POST", "/predict/job", json.dumps(body).encode()))] += 1
        seen[cls(request(a.addr, "POST", "/predict/batch", json.dumps([{"job_title": long}]).encode()))] += 1
        huge = b'{"job_title":"' + b"a" * (a.json_max_bytes + 1024) + b'"}'
        seen[cls(request(a.addr, "POST", "/predict/job", huge))] += 1
    report["oversized"] = dict(seen)

    # 3. Flood of the largest requests the service accepts.
    field = ("cook bake " * (a.max_field_chars // 10))[: a.max_field_chars]
    one = json.dumps({"job_title": field[:200], "duties_description": field, "explain": True}).encode()
    record = {"job_title": field[:200], "duties_description": field}
    per = len(json.dumps(record)) + 1
    batch = json.dumps([record] * max(1, (a.json_max_bytes - 4096) // per)).encode()
    flood = Counter()
    lock = threading.Lock()
    deadline = time.time() + a.seconds

    def flooder(i):
        body = one if i % 2 == 0 else batch
        path = "/predict/job" if i % 2 == 0 else "/predict/batch"
        while time.time() < deadline:
            s = request(a.addr, "POST", path, body)
            with lock:
                flood[f"{path} {cls(s)}"] += 1

    threads = [threading.Thread(target=flooder, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report["flood"] = {
        "seconds": a.seconds,
        "batch body bytes": len(batch),
        "records per batch": len(batch) // per,
        "answers": dict(flood),
    }

    # 4. Slow clients.
    host, port = a.addr.split(":")
    slow = []
    for _ in range(300):
        try:
            c = socket.create_connection((host, int(port)), timeout=5)
            c.sendall(b"POST /predict/job HTTP/1.1\r\nHost: x\r\nContent-")
            slow.append(c)
        except OSError:
            break
    time.sleep(0.5)
    t0 = time.time()
    health = request(a.addr, "GET", "/health", timeout=30)
    health_s = time.time() - t0
    time.sleep(a.header_timeout + 2)
    closed = 0
    for c in slow:
        c.settimeout(0.2)
        try:
            while True:
                if not c.recv(4096):
                    closed += 1
                    break
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        c.close()
    report["slow clients"] = {
        "opened": len(slow),
        "/health status while they were open": health,
        "/health seconds": round(health_s, 3),
        f"closed by the server within {a.header_timeout + 2:g} s": closed,
    }
    after = request(a.addr, "GET", "/health")
    report["/health afterwards"] = after

    stop.set()
    sampler.join()
    report["requests sent"] = (
        sum(report["random bodies"].values())
        + sum(report["oversized"].values())
        + sum(flood.values())
        + 2
    )
    report["server RSS before (MB)"] = round(start_rss / 1024, 1)
    report["server peak RSS sampled (MB)"] = round(peak[0] / 1024, 1)
    report["server peak RSS, kernel high-water mark (MB)"] = round(rss_kb(a.pid, "VmHWM") / 1024, 1)
    five = sum(v for k, v in report["random bodies"].items() if k == "5xx") + sum(
        v for k, v in report["oversized"].items() if k == "5xx"
    ) + sum(v for k, v in flood.items() if k.endswith("5xx"))
    report["5xx answers"] = five
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
