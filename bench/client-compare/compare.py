"""Runs the client comparison of scripts/bench-client (issue 11) and prints the table.

Three Events API v2 clients send the same trigger events over HTTP keep-alive to one loopback
server: `pagerduty-events` (ours), the `pagerduty-rs` crate and the Python `pagerduty`
package; `raw` (a bare hyper connection, body built once) shows what the server alone allows.
Each measurement is a fresh client process; the order of the clients rotates from run to
run, and the table gives medians over the runs, with each client's ratio to ours taken within
a run. The server counts requests and connections, which checks that every event was answered
and that the connections were kept alive.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "pagerduty (python)"
# `reqwest` is a diagnostic: reqwest 0.13 set up as ours sets it up, posting a body built once,
# so that ours minus it is what our crate adds to its HTTP client.
DEFAULT_CLIENTS = "ours,pagerduty-rs,python,raw,reqwest"


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """The `client-compare serve` process; closing its stdin stops it."""

    def __init__(self, binary, kind):
        self.kind = kind
        self.process = subprocess.Popen(
            [binary, "serve", "--server", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the {kind} server did not start (said {self.url!r})")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def stats(self):
        stats = self.get("/_bench/stats")
        stats["cpu"] = cpu_seconds(self.process.pid)
        return stats

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=10)


def send(args, client, url, concurrency, seconds, warmup):
    if client == PYTHON:
        command = [args.python, os.path.join(HERE, "pd_python.py")]
    else:
        command = [args.bin, "send", "--client", client]
    command += ["--url", url, "--concurrency", str(concurrency)]
    command += ["--seconds", str(seconds), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"{client} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, server, client, concurrency):
    """One measurement, checked against the server's own counts."""
    load_before = loadavg()
    before = server.stats()
    result = send(args, client, server.url, concurrency, args.seconds, args.warmup)
    after = server.stats()
    requests = after["requests"] - before["requests"]
    expected = result["events"] + result["warmup_events"]
    if requests != expected:
        raise SystemExit(f"{client}: server saw {requests} requests, client sent {expected}")
    # Less the connection of the second stats request itself (urllib does not keep it alive).
    result["connections"] = after["connections"] - before["connections"] - 1
    # A pool may open a spare connection when one is handed back just as another request
    # starts (reqwest does, at 8 in flight: up to twice as many for ours); a client that did
    # not keep connections alive would open one per event.
    if result["connections"] > 4 * concurrency:
        raise SystemExit(f"{client}: {result['connections']} connections for {concurrency}: "
                         "not kept alive")
    result["server_cpu_us_per_event"] = (after["cpu"] - before["cpu"]) * 1e6 / requests
    result["load"] = (load_before + loadavg()) / 2
    return result


def check_valid_events(args, clients):
    """Every client's events must be ones PagerDuty accepts: the simulator validates them."""
    server = Server(args.bin, "simulator")
    try:
        for client in clients:
            send(args, client, server.url, 1, 0.05, 5)
        stats = server.get("/_simulator/stats")
    finally:
        server.stop()
    if stats["rejected_invalid"] or stats["accepted"] != stats["requests"]:
        raise SystemExit(f"the simulator did not accept every event: {stats}")
    print(f"events checked by the simulator: {stats['accepted']} accepted, 0 invalid")


def server_alone(args, concurrencies):
    print("\nthe server alone (raw sender), one measurement each:")
    for kind in ("fixed", "simulator"):
        server = Server(args.bin, kind)
        try:
            for concurrency in concurrencies:
                r = measure(args, server, "raw", concurrency)
                print(
                    f"  {kind:<9} c={concurrency:<2} {r['events_per_s']:>9,.0f} req/s  "
                    f"server {r['server_cpu_us_per_event']:5.1f} µs CPU/req  "
                    f"sender {r['cpu_us_per_event']:5.1f} µs CPU/req  load {r['load']:.1f}"
                )
        finally:
            server.stop()


def line(r):
    return (
        f"{r['client']:<19} c={r['concurrency']:<2} {r['events_per_s']:>9,.0f} ev/s  "
        f"p50 {r['p50_us']:7.0f} µs  p99 {r['p99_us']:7.0f} µs  "
        f"CPU/event client {r['cpu_us_per_event']:6.1f} µs, server "
        f"{r['server_cpu_us_per_event']:5.1f} µs  conns {r['connections']}  load {r['load']:.1f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the built client-compare binary")
    parser.add_argument("--python", required=True, help="python of the venv with `pagerduty`")
    parser.add_argument("--server", choices=["fixed", "simulator"], default="fixed")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed phase per measurement")
    parser.add_argument("--warmup", type=int, default=100, help="untimed events per sender")
    parser.add_argument("--concurrency", default="1,8", help="in flight at once, e.g. 1,8")
    parser.add_argument("--clients", default=DEFAULT_CLIENTS,
                        help="of ours, pagerduty-rs, python, raw, reqwest; ours first")
    parser.add_argument("--skip-server-alone", action="store_true")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = [PYTHON if c == "python" else c for c in args.clients.split(",")]
    if clients[0] != "ours":
        raise SystemExit("--clients must start with ours: ratios are to ours")

    print(f"{os.cpu_count()} CPUs, load average {open('/proc/loadavg').read().strip()}")
    check_valid_events(args, clients)
    if not args.skip_server_alone:
        server_alone(args, concurrencies)

    server = Server(args.bin, args.server)
    results = []
    try:
        print(f"\n{args.runs} runs against the {args.server} server, {args.seconds} s each:")
        for run in range(args.runs):
            order = clients[run % len(clients):] + clients[: run % len(clients)]
            for concurrency in concurrencies:
                for client in order:
                    r = measure(args, server, client, concurrency)
                    r["run"] = run
                    results.append(r)
                    print(f"  run {run + 1} {line(r)}", flush=True)
    finally:
        server.stop()

    print(f"\nmedians of {args.runs} runs ({args.server} server; ratio = events/s ÷ ours, "
          "median of the per-run ratios):")
    header = (f"| {'client':<19} | in flight | events/s | p50 µs | p99 µs "
              "| client CPU µs/event | server CPU µs/event | ratio to ours |")
    print(header)
    print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
    for concurrency in concurrencies:
        for client in clients:
            mine = [r for r in results if r["client"] == client and r["concurrency"] == concurrency]
            ours = {r["run"]: r for r in results
                    if r["client"] == "ours" and r["concurrency"] == concurrency}
            ratios = [r["events_per_s"] / ours[r["run"]]["events_per_s"] for r in mine]

            def med(key):
                return statistics.median(r[key] for r in mine)

            name = {"raw": "raw (server alone)", "reqwest": "reqwest 0.13 alone"}.get(client, client)
            print(f"| {name:<19} | {concurrency:>9} | {med('events_per_s'):>8,.0f} "
                  f"| {med('p50_us'):>6.0f} | {med('p99_us'):>6.0f} "
                  f"| {med('cpu_us_per_event'):>19.1f} "
                  f"| {med('server_cpu_us_per_event'):>19.1f} "
                  f"| {statistics.median(ratios):>13.2f} |")
    loads = [r["load"] for r in results]
    print(f"\nload average (1 min) while measuring: min {min(loads):.1f}, "
          f"median {statistics.median(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
