"""Load on `stackgan serve`, bounded and local: a burst of concurrent requests against the queue
limit, /healthz latency under that load, the server's memory, and clients that disconnect while
they wait.

Only 127.0.0.1 traffic, to a server this script starts and stops; at most
``--burst + --disconnects + 4`` generate requests and ``--max-seconds`` of wall time.

    python benchmarks/serve_load.py pretrained/shapes --json results/serve-load.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(base: str, body: dict, timeout: float) -> tuple[int, float]:
    t = time.monotonic()
    req = urllib.request.Request(base + "/api/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.monotonic() - t


def healthz(base: str) -> tuple[dict, float]:
    t = time.monotonic()
    with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
        body = json.loads(r.read())
    return body, time.monotonic() - t


def dropped(base: str) -> int | None:
    """The server's count of requests dropped because their client left (None: it keeps none)."""
    return healthz(base)[0].get("queue", {}).get("dropped_disconnected")


def hang_up(port: int, body: dict) -> None:
    """Send one request and close the connection without reading the answer."""
    data = json.dumps(body).encode()
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model or run folder to serve")
    ap.add_argument("--burst", type=int, default=200, help="concurrent n=1 requests (default 200, at most 400)")
    ap.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue (default 64)")
    ap.add_argument("--disconnects", type=int, default=20, help="n=16 requests whose clients hang up (default 20)")
    ap.add_argument("--max-seconds", type=float, default=600, help="give up after this long (default 600)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    if not 1 <= args.burst <= 400 or not 0 <= args.disconnects <= 100:
        ap.error("--burst must be 1-400 and --disconnects 0-100")
    deadline = time.monotonic() + args.max_seconds
    port = free_port()
    base = f"http://{HOST}:{port}"
    server = subprocess.Popen([sys.executable, "-m", "stackgan", "serve", str(args.model), "--host", HOST, "--port",
                               str(port), "--max-queue", str(args.max_queue)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    out: dict = {"burst": args.burst, "max_queue": args.max_queue, "disconnects": args.disconnects,
                 "cpus": os.cpu_count()}
    try:
        while True:
            try:
                healthz(base)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
        one = {"text": "a small red circle in the middle", "n": 1, "seed": 0}
        post(base, one, 120)  # warm up
        idle = sorted(post(base, one, 120)[1] for _ in range(3))
        out["idle_n1_ms"] = ms(idle[1])
        out["rss_mib_idle"] = round(rss_mib(server.pid), 1)

        # --- burst: concurrent n=1 requests, /healthz polled meanwhile -------------------------
        probes, rss, stop = [], [], threading.Event()

        def poll():
            while not stop.is_set() and time.monotonic() < deadline:
                probes.append(healthz(base)[1])
                rss.append(rss_mib(server.pid))
                time.sleep(0.1)
        poller = threading.Thread(target=poll)
        poller.start()
        bodies = [{"text": "a small blue square at the top", "n": 1, "seed": i} for i in range(args.burst)]
        t = time.monotonic()
        with ThreadPoolExecutor(args.burst) as pool:
            answers = list(pool.map(lambda b: post(base, b, max(1.0, deadline - time.monotonic())), bodies))
        out["burst_wall_s"] = round(time.monotonic() - t, 2)
        stop.set()
        poller.join()
        served = [s for code, s in answers if code == 200]
        busy = [s for code, s in answers if code == 429]
        out.update({"served": len(served), "refused_429": len(busy),
                    "other_status": sorted({code for code, _ in answers} - {200, 429}),
                    "refused_max_ms": ms(max(busy)) if busy else None,
                    "served_median_ms": ms(statistics.median(served)) if served else None,
                    "healthz_median_ms": ms(statistics.median(probes)), "healthz_max_ms": ms(max(probes)),
                    "healthz_probes": len(probes), "rss_mib_peak": round(max(rss), 1),
                    "rss_mib_after": round(rss_mib(server.pid), 1)})

        # --- clients that hang up while they wait ----------------------------------------------
        big = {"text": "a large green striped square", "n": 16, "seed": 0}
        alone = post(base, big, 120)[1]
        dropped_before = dropped(base)
        blocker = ThreadPoolExecutor(1).submit(post, base, big, 120)
        time.sleep(0.2)  # (not a measurement: lets the blocker reach the worker first)
        for i in range(args.disconnects):
            hang_up(port, {**big, "seed": i + 1})
        time.sleep(0.5)
        try:
            after = post(base, one, max(1.0, deadline - time.monotonic()))[1]
        except TimeoutError:
            after = float("inf")  # still waiting when --max-seconds ran out
        blocker.result()
        print(json.dumps(out), flush=True)  # the burst's numbers, in case the rest runs out of time
        out.update({"n16_alone_ms": ms(alone), "next_n1_after_disconnects_ms": ms(after),
                    "dropped_disconnected": None if dropped_before is None else dropped(base) - dropped_before})
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # its worker thread is still busy: stop it the hard way
            server.kill()
            server.wait()
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
