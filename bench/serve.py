#!/usr/bin/env python3
"""`portmgr serve` measured against baselines taken in the same run (loopback only):

    python3 bench/serve.py            # writes bench/results/serve.md
    python3 bench/serve.py --quick    # smoke test: fewer rounds, report to a temp file

1. The portserver protocol, one port per connection (connect, write the pid, read the
   port), against portpicker's own portserver (portserver.py from the portpicker
   package on PyPI), interleaved in rounds from one client: median and p99, and the
   ratio of the medians (target: portmgr <= 1/4 of portserver.py).
2. REST allocate + release throughput under wrk (Debian's keep-alive load generator,
   2 threads x 1 connection, each alternating POST /ports/allocate and POST
   /ports/release of the id it got), beside the same pair of calls made directly on the
   library (Python's portmgr module) in the same run.
3. The latency the server adds over a direct library call: one client doing allocate +
   release sequentially over a keep-alive HTTP connection (http.client) against the same
   through the Python module, medians and their difference.

Run it with a Python that has portpicker installed (tests/serve/run.sh's venv does:
`.venv-serve/bin/python bench/serve.py`); the library figures use `.venv` (the venv
tests/python/run.sh builds with portmgr installed) when it exists. Nothing is asserted
about the figures: a noisy machine never fails this script.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "portmgr"
OURS_POOL = "64000-64999"
THEIRS_POOL = "65000-65499"

WRK_LUA = r"""
local counter = 0
local pending = nil
local tag = tostring(math.random(1, 1000000000))
request = function()
  if pending then
    local body = '{"allocation_id":"' .. pending .. '"}'
    pending = nil
    return wrk.format("POST", "/ports/release", {["Content-Type"] = "application/json"}, body)
  end
  counter = counter + 1
  return wrk.format("POST", "/ports/allocate", {["Content-Type"] = "application/json"},
    '{"service_name":"b' .. tag .. '-' .. counter .. '","ttl_seconds":60}')
end
response = function(status, headers, body)
  local id = body:match('"allocation_id":"(%d+)"')
  if id then pending = id end
end
"""


def ask(addr: str, pid: int) -> int:
    s = socket.socket(socket.AF_UNIX)
    s.connect("\0" + addr[1:] if addr.startswith("@") else addr)
    s.sendall(b"%d\n" % pid)
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(64)
        if not chunk:
            break
        buf += chunk
    s.close()
    return int(buf.split(b"\n")[0] or b"0")


def wait_for_socket(addr: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect("\0" + addr[1:])
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {addr}")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def portserver_round(ours: str, theirs: str, n: int, pid: int) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        for addr, out in ((ours, a), (theirs, b)) if i % 2 == 0 else ((theirs, b), (ours, a)):
            t = time.perf_counter()
            port = ask(addr, pid)
            out.append((time.perf_counter() - t) * 1e6)
            if port == 0:
                raise SystemExit(f"{addr} gave no port")
    return a, b


def http_pair(conn: http.client.HTTPConnection, name: str) -> None:
    conn.request("POST", "/ports/allocate", json.dumps({"service_name": name, "ttl_seconds": 60}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    if r.status != 200:
        raise SystemExit(f"allocate: {r.status} {body}")
    conn.request("POST", "/ports/release", json.dumps({"allocation_id": body["allocation"]["allocation_id"]}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise SystemExit(f"release: {r.status}")


LIB_SNIPPET = r"""
import json, sys, time, portmgr
reg = portmgr.Registry(sys.argv[1])
n, secs = int(sys.argv[2]), float(sys.argv[3])
lat = []
for i in range(n):
    t = time.perf_counter()
    reg.allocate(name=f"lib-{i}", ttl=60, range=(64000, 64999)).release()
    lat.append((time.perf_counter() - t) * 1e6)
done, end = 0, time.perf_counter() + secs
while time.perf_counter() < end:
    reg.allocate(name=f"tp-{done}", ttl=60, range=(64000, 64999)).release()
    done += 1
print(json.dumps({"lat": lat, "ops": done / secs}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    n = 60 if args.quick else 400
    secs = 1.0 if args.quick else 5.0
    out = args.out or (Path(tempfile.mkdtemp()) / "serve.md" if args.quick else ROOT / "bench" / "results" / "serve.md")
    if not BIN.exists():
        subprocess.run(["cargo", "build", "--release", "-p", "portmgr-cli"], cwd=ROOT, check=True)
    portserver_py = Path(sys.executable).parent / "portserver.py"
    if not portserver_py.exists():
        raise SystemExit(f"{portserver_py} not found: run with a Python that has portpicker installed")
    tmp = Path(tempfile.mkdtemp())
    pid = os.getpid()
    ours_ps, theirs_ps = f"@pmbench-ours-{pid}", f"@pmbench-theirs-{pid}"
    env = dict(os.environ, PORTMGR_RANGE=OURS_POOL)
    server = subprocess.Popen(
        [str(BIN), "--registry", str(tmp / "reg"), "serve", "--http", "127.0.0.1:0", "--portserver", ours_ps,
         "--rate-limit", "10000000"], stdout=subprocess.PIPE, text=True, env=env)
    url = ""
    while not url:
        line = server.stdout.readline() if server.stdout else ""
        if not line:
            raise SystemExit("portmgr serve did not start")
        if line.startswith("http "):
            url = line.split()[1]
    theirs = subprocess.Popen([sys.executable, str(portserver_py), f"--portserver_address={theirs_ps}",
                               f"--portserver_static_pool={THEIRS_POOL}"], stderr=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        wait_for_socket(theirs_ps, time.monotonic() + 20)
        # Each server hands out at most n ports to this pid (500 in each pool).
        a, b = portserver_round(ours_ps, theirs_ps, n, pid)
        ma, mb = statistics.median(a), statistics.median(b)
        lines += [
            "## 1. portserver protocol: one port per connection",
            "",
            f"{n} requests each, interleaved, one client (connect, write pid, read port).",
            "",
            "| server | median µs | p99 µs |",
            "| --- | ---: | ---: |",
            f"| portmgr serve --portserver | {ma:.0f} | {pct(a, 0.99):.0f} |",
            f"| portpicker's portserver.py | {mb:.0f} | {pct(b, 0.99):.0f} |",
            "",
            f"**portmgr / portserver.py median: {ma / mb:.3f}** (target <= 0.25).",
            "",
        ]

        # 2. wrk: REST allocate + release pairs, keep-alive.
        host = url.split("//")[1]
        wrk = shutil.which("wrk")
        lib_py = ROOT / ".venv" / "bin" / "python"
        lib = None
        if lib_py.exists():
            r = subprocess.run([str(lib_py), "-c", LIB_SNIPPET, str(tmp / "reg"), str(n), str(secs)],
                               capture_output=True, text=True, env=env)
            if r.returncode == 0:
                lib = json.loads(r.stdout)
        lines += ["## 2. REST allocate + release throughput (wrk, 2 threads x 1 keep-alive connection)", ""]
        if wrk:
            script = tmp / "pairs.lua"
            script.write_text(WRK_LUA)
            r = subprocess.run([wrk, "-t2", "-c2", f"-d{int(secs)}s", "-s", str(script), f"http://{host}"],
                               capture_output=True, text=True)
            reqs = 0.0
            lat = ""
            for ln in r.stdout.splitlines():
                if ln.strip().startswith("Requests/sec:"):
                    reqs = float(ln.split()[1])
                if ln.strip().startswith("Latency"):
                    lat = ln.split()[1]
            pairs = reqs / 2
            lines += [
                f"wrk: {reqs:.0f} requests/s = **{pairs:.0f} allocate+release pairs/s** (mean latency per request {lat}).",
            ]
            if lib:
                lines += [f"The library (Python module, one process) in the same run: {lib['ops']:.0f} pairs/s; "
                          f"**server / library: {pairs / lib['ops']:.2f}**."]
        else:
            lines += ["wrk is not installed (`apt-get install wrk`): throughput not measured."]
        lines.append("")

        # 3. Latency the server adds.
        conn = http.client.HTTPConnection(host)
        http_lat = []
        for i in range(n):
            t = time.perf_counter()
            http_pair(conn, f"seq-{i}")
            http_lat.append((time.perf_counter() - t) * 1e6)
        conn.close()
        mh = statistics.median(http_lat)
        lines += ["## 3. Latency the server adds (sequential allocate + release, one client)", "",
                  "| path | median µs | p99 µs |", "| --- | ---: | ---: |",
                  f"| REST over keep-alive HTTP (http.client) | {mh:.0f} | {pct(http_lat, 0.99):.0f} |"]
        if lib:
            ml = statistics.median(lib["lat"])
            lines += [f"| the library directly (Python module) | {ml:.0f} | {pct(lib['lat'], 0.99):.0f} |", "",
                      f"**The server adds {mh - ml:.0f} µs per allocate + release ({mh / ml:.1f}x the direct call).**"]
        else:
            lines += ["", "(.venv with the portmgr module not found: run tests/python/run.sh first for the direct figure.)"]
        lines.append("")
    finally:
        server.terminate()
        theirs.terminate()
        server.wait()
        theirs.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    head = [
        "# portmgr serve, measured",
        "",
        f"{time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, loopback; {'quick' if args.quick else 'full'} run of "
        "`bench/serve.py` (every ratio against a baseline taken in the same run).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
