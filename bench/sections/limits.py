"""Oversized requests against a real uvicorn process: a 50 MB unauthenticated JSON body and a
100 MB header (latency, the server's peak memory and CPU), and what the limits cost a hot read.

A server of its own, started the way `junction serve` starts one, so its memory and CPU are
read from /proc without the other sections' load in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import httpx

from bench.harness import ROOT, BenchContext, free_port

BODY_MB = 50
HEADER_MB = 100
# Not a 50 MB string: fifty megabytes of small objects, which is what parsing pays most for.
_ITEM = b'{"provider_name":"p","config_data":{"k":[1,2,3]}},'


def _body() -> bytes:
    items = _ITEM * (BODY_MB * 2**20 // len(_ITEM))
    return b'{"map_providers":[' + items[:-1] + b"]}"


def _status(pid: int, field: str) -> float:
    """A VmHWM / VmRSS figure of the process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from app.cli import main; "
        f"sys.exit(main(['serve', '--host', '127.0.0.1', '--port', '{port}']))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env})


def _status_code(status_line: bytes) -> str:
    return status_line.decode(errors="replace")[9:12] or "none"


def _send_raw(port: int, head: bytes, rest: list[bytes]) -> tuple[float, bytes]:
    """Write a request by hand and read the status line: seconds taken, and that line.

    The writing runs in a thread of its own, so an answer given before the request was all sent
    (and the connection closed) is read when it comes rather than lost to the reset.
    """
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:

        def write() -> None:
            try:
                sock.sendall(head)
                for part in rest:
                    sock.sendall(part)
            except OSError:
                pass  # the server answered and closed before everything was written

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        elapsed = time.perf_counter() - started
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        writer.join()
    return elapsed, answer.split(b"\r\n", 1)[0]


async def run(ctx: BenchContext) -> None:
    port = free_port()
    process = _serve({**ctx.base_env, "LOG_LEVEL": "WARNING"}, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(200):
                try:
                    if (await client.get(base_url + "/livez")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            # Whatever the process uses once warm: the figures below are growth over it.
            for _ in range(20):
                await client.get(base_url + "/livez")
            # `junction serve` with one worker serves in the process it started.
            pid = process.pid
            rss = _status(pid, "VmRSS")
        body = _body()
        body_head = (
            b"POST /config/tenant-a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        # By hand: a server that refuses early closes the connection while the body is still
        # being written, which an HTTP client reports as an error instead of the answer.
        elapsed, status_line = await asyncio.to_thread(_send_raw, port, body_head, [body])
        ctx.report(
            f"{BODY_MB} MB unauthenticated JSON body: answer {_status_code(status_line)}",
            elapsed * 1000,
            "ms",
        )
        ctx.report(
            "  server peak resident growth over its warm size", _status(pid, "VmHWM") - rss, "MB"
        )
        head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: "
        cpu = _cpu_s(pid)
        header = [b"a" * 2**20] * HEADER_MB + [b"\r\n\r\n"]
        elapsed, status_line = await asyncio.to_thread(_send_raw, port, head, header)
        ctx.report(
            f"{HEADER_MB} MB header: answer {_status_code(status_line)}",
            elapsed * 1000,
            "ms",
        )
        ctx.report("  server CPU spent on it", (_cpu_s(pid) - cpu) * 1000, "ms")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
