"""The Python side of the client comparison run by scripts/bench-client (issue 11).

Sends the same trigger event as the Rust senders (src/main.rs) with PagerDuty's own Python
client, the `pagerduty` package's EventsApiV2Client, pointed at the loopback server by its
documented `base_url` parameter, and prints one JSON line of the same shape.

The client refuses a base URL that is not https:// (`UrlError` from the `url` property's
setter) and the server here is plain http on loopback, so it is used through a subclass whose
only change is that setter without the check. (A custom httpx2 transport swapping the URL per
request was tried first; the swap alone cost about 40 µs per request on this machine.)

Concurrency is N threads sharing one client (httpx2's Client may be shared between threads and
keeps up to 20 connections alive), as a Python user would send from several threads; the GIL
is part of what is measured.
"""

import argparse
import json
import math
import os
import threading
import time

import pagerduty

# A made-up key: the server is on loopback, never PagerDuty.
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
SUMMARY = "Disk full on db-1.prod.example.com (/var/lib/postgresql 99.3%)"
SOURCE = "db-1.prod.example.com"


class LoopbackEventsApiV2Client(pagerduty.EventsApiV2Client):
    """PagerDuty's client unchanged, but for a base URL that may be plain http."""

    @property
    def url(self):
        return self._url

    @url.setter
    def url(self, new_base_url):
        self._url = new_base_url


def send(client, dedup_key):
    # Built per event, as a caller would, from the same values as the Rust senders.
    client.trigger(
        SUMMARY,
        SOURCE,
        dedup_key=dedup_key,
        severity="critical",
        payload={"component": "postgresql", "group": "pg-main", "class": "disk"},
        custom_details={
            "alertname": "DiskFull",
            "instance": "db-1.prod.example.com:9100",
            "job": "node",
            "mountpoint": "/var/lib/postgresql",
            "free_bytes": 1048576,
            "used_ratio": 0.993,
            "team": "storage",
        },
    )


def percentile(values, p):
    """Nearest-rank percentile of sorted values (as the Rust side computes it)."""
    rank = min(max(math.ceil(p * len(values)), 1), len(values))
    return values[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:PORT")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    concurrency = max(args.concurrency, 1)

    client = LoopbackEventsApiV2Client(ROUTING_KEY, base_url=args.url)
    ready = threading.Barrier(concurrency + 1)
    go = threading.Barrier(concurrency + 1)
    start = [0.0]
    shares = [None] * concurrency
    errors = []

    def worker(task):
        seq = 0
        try:
            while seq < args.warmup:
                send(client, f"bench/{task}/{seq}")
                seq += 1
        except Exception as error:  # noqa: BLE001 - reported below, after the barriers
            errors.append(repr(error))
        ready.wait()
        go.wait()
        if errors:
            return
        latencies = []
        finished = start[0]
        try:
            while time.perf_counter() - start[0] < args.seconds:
                began = time.perf_counter()
                send(client, f"bench/{task}/{seq}")
                finished = time.perf_counter()
                latencies.append(finished - began)
                seq += 1
        except Exception as error:  # noqa: BLE001
            errors.append(repr(error))
        shares[task] = (latencies, finished)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    cpu_before = os.times()
    start[0] = time.perf_counter()
    go.wait()
    for thread in threads:
        thread.join()
    cpu_after = os.times()
    if errors:
        raise SystemExit(f"pagerduty (python): {errors[0]}")
    latencies = sorted(l for share in shares for l in share[0])
    finished = max(share[1] for share in shares)
    seconds = finished - start[0]
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    if not latencies:
        raise SystemExit("pagerduty (python): no event sent in the timed phase")
    print(
        json.dumps(
            {
                "client": "pagerduty (python)",
                "concurrency": concurrency,
                "events": len(latencies),
                "warmup_events": args.warmup * concurrency,
                "seconds": seconds,
                "events_per_s": len(latencies) / seconds,
                "p50_us": percentile(latencies, 0.50) * 1e6,
                "p99_us": percentile(latencies, 0.99) * 1e6,
                "cpu_us_per_event": cpu * 1e6 / len(latencies),
            }
        )
    )


if __name__ == "__main__":
    main()
