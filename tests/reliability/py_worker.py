"""A Python client for the reliability suite's mixed concurrency run (see
tests/reliability/concurrency.rs and c_worker.c: same protocol).

Usage: py_worker.py REGISTRY_DIR START LEN SECONDS SEED
Prints "L port alloc_ns release_ns pid" per held port, "BINDFAIL ...", "ERR ...",
then "SUM allocated released exhausted errors".
"""
import os
import random
import socket
import sys
import threading
import time

import portmgr

d, start, length, secs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
reg = portmgr.Registry(d)
deadline = time.monotonic() + secs
lock = threading.Lock()
total = [0, 0, 0, 0]
out = []


def bind_plain(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        s.bind(("::", port))
        s.listen(8)
        return s
    except OSError as e:
        s.close()
        return e


def run(t):
    rng = random.Random(seed * 97 + t)
    mine = [0, 0, 0, 0]
    log = []
    while time.monotonic() < deadline:
        count = 2 if rng.random() < 0.2 else 1
        try:
            lease = reg.allocate(range=(start, start + length - 1), count=count)
        except portmgr.PortsExhausted:
            mine[2] += 1
            time.sleep(0.0002)
            continue
        except portmgr.PortError as e:
            mine[3] += 1
            with lock:
                print(f"ERR {type(e).__name__} {e}", flush=True)
            continue
        a = time.monotonic_ns()
        ports = list(lease.ports)
        mine[0] += len(ports)
        socks = []
        for p in ports:
            s = bind_plain(p)
            if isinstance(s, OSError):
                with lock:
                    print(f"BINDFAIL {p} {s} (Python client)", flush=True)
            else:
                socks.append(s)
        time.sleep(rng.random() * 0.0015)
        for s in socks:
            s.close()
        r = time.monotonic_ns()
        pid = os.getpid()
        log.extend(f"L {p} {a} {r} {pid}" for p in ports)
        lease.release()
        mine[1] += len(ports)
    with lock:
        out.extend(log)
        for i in range(4):
            total[i] += mine[i]


threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
sys.stdout.write("\n".join(out) + ("\n" if out else ""))
print(f"SUM {total[0]} {total[1]} {total[2]} {total[3]}", flush=True)
