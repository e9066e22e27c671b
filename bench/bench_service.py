"""Loopback benchmark of the bridge service (not a test).

Three processes on 127.0.0.1: the service (``python -m bank_sync_bridge.service``, SQLite,
JSON logs to a file), the Linxo emulator as the operator's aggregator (in this process), and
the load generator (a separate process, this file with ``--load``). Phases, each bounded:

1. webhook intake at a fixed rate (default 500 requests/s, open loop: requests are sent on
   schedule whether or not earlier ones have answered), each event new and routed to the
   tenant that owns the connection;
2. pages of operations read by the tenant (signed, through the service, from the emulator),
   4 concurrent readers;
3. webhook intake saturation (32 connections, closed loop): the throughput ceiling.

Ends with one line ``RESULT webhook_p99_ms=... transactions_page_p99_ms=... requests_per_s=...``
where ``requests_per_s`` is the saturation throughput of phase 3. Goal: webhook p99 <= 20 ms at
500 requests/s on two cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bank_sync_bridge.providers import ProviderConfig  # noqa: E402
from bank_sync_bridge.providers.bridge_service import BridgeServiceProvider  # noqa: E402
from bank_sync_bridge.signing import sign_request  # noqa: E402

WEBHOOK_TOKEN = "bench-webhook-token-0123456789"  # noqa: S105 - a throwaway local token


# ----------------------------------------------------------------------------- load process
def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class _Worker:
    """One keep-alive connection to the service."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                answer = self.conn.getresponse()
                answer.read()
                return answer.status
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 2:
                    return 0
        return 0


def _webhook_body(template: dict[str, Any], serial: int) -> bytes:
    return json.dumps({**template, "id": f"evt-bench-{os.getpid()}-{serial}"}).encode()


def _open_loop_webhooks(
    host: str, port: int, path: str, template: dict[str, Any], *, rate: float, seconds: float
) -> dict[str, Any]:
    total = int(rate * seconds)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))
    start = time.perf_counter() + 0.2

    def run() -> None:
        nonlocal errors
        worker = _Worker(host, port)
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            status = worker.send("POST", path, _webhook_body(template, index), headers)
            done = time.perf_counter()
            with lock:
                # Latency counted from the scheduled time too, so that a slow answer delaying
                # the next sends (coordinated omission) is not hidden.
                latencies.append((done - sent) * 1000)
                lags.append((done - max(due, start)) * 1000)
                if status != 202:
                    errors += 1

    threads = [threading.Thread(target=run) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "sent": total,
        "errors": errors,
        "achieved_rps": total / elapsed,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "p99_from_schedule_ms": _percentile(lags, 99),
    }


def _closed_loop(
    host: str, port: int, make_request: Any, *, workers: int, seconds: float, ok: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def run(number: int) -> None:
        nonlocal errors
        worker = _Worker(host, port)
        serial = 0
        while time.perf_counter() < stop_at:
            method, path, body, headers = make_request(number, serial)
            serial += 1
            sent = time.perf_counter()
            status = worker.send(method, path, body, headers)
            elapsed = (time.perf_counter() - sent) * 1000
            with lock:
                latencies.append(elapsed)
                if status != ok:
                    errors += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
    }


def run_load(config: dict[str, Any]) -> dict[str, Any]:
    """The load generator's work (runs in its own process)."""
    parts = urlsplit(config["url"])
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 80)
    template = config["webhook_template"]
    hook = f"/webhooks/linxo?token={WEBHOOK_TOKEN}"
    results: dict[str, Any] = {}
    results["webhooks"] = _open_loop_webhooks(
        host, port, hook, template, rate=config["rate"], seconds=config["seconds"]
    )

    paths = config["page_paths"]

    def page_request(number: int, serial: int) -> tuple[str, str, bytes, dict[str, str]]:
        # Reader n plays company n+1 and walks through that company's pages.
        mine = [path for company, path in paths if company == str(number + 1)]
        path = mine[serial % len(mine)]
        headers = sign_request(
            config["client_secret"],
            "GET",
            path,
            b"",
            client_id=config["client_id"],
            company=str(number + 1),
        )
        return "GET", path, b"", headers

    results["pages"] = _closed_loop(
        host, port, page_request, workers=4, seconds=config["seconds"] / 2, ok=200
    )

    def hook_request(number: int, serial: int) -> tuple[str, str, bytes, dict[str, str]]:
        body = _webhook_body(template, 10_000_000 + number * 1_000_000 + serial)
        return "POST", hook, body, {"Content-Type": "application/json"}

    results["saturation"] = _closed_loop(
        host, port, hook_request, workers=32, seconds=min(5.0, config["seconds"] / 2), ok=202
    )
    return results


# ----------------------------------------------------------------------------- orchestration
def _cli(env: dict[str, str], database: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bank_sync_bridge.service", "--database-url", database, *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return done.stdout


def main() -> int:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 1")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(run_load(json.loads(Path(args.load).read_text()))))
        return 0

    from bank_sync_bridge.crypto import generate_key  # noqa: PLC0415
    from bank_sync_bridge.testing.linxo_emulator import LinxoEmulator  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="bench_service_"))
    database = f"sqlite:///{workdir}/service.sqlite3"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BANK_SYNC_SERVICE_KEYS": generate_key(),
    }
    emulator = LinxoEmulator(transactions_per_account=2000).start()
    service: subprocess.Popen[bytes] | None = None
    log_path = workdir / "service.log"
    try:
        _cli(
            env,
            database,
            "aggregator",
            "set",
            "--kind",
            "linxo",
            "--base-url",
            emulator.api_url,
            "--credential",
            f"client_id={emulator.client_id}",
            "--credential",
            f"client_secret={emulator.client_secret}",
            "--option",
            f"auth_url={emulator.auth_url}",
            "--option",
            f"widget_url={emulator.widget_url}",
            "--option",
            "page_size=100",
            "--webhook-secret",
            WEBHOOK_TOKEN,
        )
        added = _cli(env, database, "tenant", "add", "Bench tenant")
        client_id = re.search(r"client_id:\s+(\S+)", added).group(1)  # type: ignore[union-attr]
        secret = re.search(r"client_secret:\s+(\S+)", added).group(1)  # type: ignore[union-attr]

        with log_path.open("wb") as log:
            service = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bank_sync_bridge.service",
                    "--database-url",
                    database,
                    "--port",
                    "0",
                    "--rate",
                    "100000",
                    "--burst",
                    "100000",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        url = ""
        deadline = time.monotonic() + 30
        while not url:
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError(f"The service did not start: {log_path.read_text()[-2000:]}")
            found = re.search(r'"url": "([^"]+)"', log_path.read_text())
            url = found.group(1) if found else ""
            time.sleep(0.05)

        # Four companies of the tenant each connect a bank (a Linxo user is created on first
        # use) and read their accounts: the service now knows who owns each connection and
        # account, and the readers of phase 2 are four companies syncing at the same time.
        page_paths: list[tuple[str, str]] = []
        connection_id = ""
        for company in ("1", "2", "3", "4"):
            client = BridgeServiceProvider(
                ProviderConfig(
                    user_ref=company,
                    base_url=url,
                    credentials={"client_id": client_id, "client_secret": secret},
                )
            )
            known = set(emulator.user_ids())
            client.start_connect(callback_url="http://127.0.0.1:9/cb", state="bench")
            (user_id,) = set(emulator.user_ids()) - known
            connection_id = emulator.create_connection(user_id)
            client.list_connections()
            account = next(
                a for a in client.list_accounts(connection_id) if a.type.value == "checking"
            )
            base = f"/v1/accounts/{quote(account.remote_id, safe='')}/transactions"
            page_paths.append((company, base))
            for page in client.iter_transactions(account.remote_id):
                if page.cursor and not page.last:
                    page_paths.append(
                        (company, f"{base}?cursor={quote(page.cursor.dumps(), safe='')}")
                    )
        template = json.loads(emulator.webhook_body(connection_id))

        config_path = workdir / "load.json"
        config_path.write_text(
            json.dumps(
                {
                    "url": url,
                    "rate": args.rate,
                    "seconds": args.seconds,
                    "webhook_template": template,
                    "page_paths": page_paths,
                    "client_id": client_id,
                    "client_secret": secret,
                }
            )
        )
        load = subprocess.run(
            [sys.executable, __file__, "--load", str(config_path)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=args.seconds * 4 + 60,
        )
        results = json.loads(load.stdout.strip().splitlines()[-1])
        events, _last = client.poll_events(limit=1)  # the last company's client
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=10)
        emulator.stop()

    hooks, pages, saturation = results["webhooks"], results["pages"], results["saturation"]
    print(
        f"webhooks: {hooks['sent']} sent at {hooks['achieved_rps']:.0f}/s, "
        f"{hooks['errors']} errors, p50 {hooks['p50_ms']:.2f} ms, p99 {hooks['p99_ms']:.2f} ms "
        f"(p99 from schedule {hooks['p99_from_schedule_ms']:.2f} ms)"
    )
    print(
        f"transaction pages ({len(page_paths)} distinct, 100 operations each, 4 companies, "
        f"via the Linxo emulator): {pages['requests']} reads at {pages['rps']:.0f}/s, "
        f"{pages['errors']} errors, p50 {pages['p50_ms']:.2f} ms, p99 {pages['p99_ms']:.2f} ms"
    )
    print(
        f"webhook saturation (32 connections): {saturation['rps']:.0f}/s, "
        f"{saturation['errors']} errors, p99 {saturation['p99_ms']:.2f} ms"
    )
    ok = not hooks["errors"] and not pages["errors"] and bool(events)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
        print("events routed to the tenant: yes")
    else:
        print(f"events routed to the tenant: {'yes' if events else 'NO'}; logs kept in {workdir}")
    print(
        f"RESULT webhook_p99_ms={hooks['p99_ms']:.2f} "
        f"transactions_page_p99_ms={pages['p99_ms']:.2f} "
        f"requests_per_s={saturation['rps']:.0f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
