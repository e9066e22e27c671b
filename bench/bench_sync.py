#!/usr/bin/env python3
"""Benchmarks of the synchronisation engine on the machine's real Odoo 18 and PostgreSQL.

Usage::

    python3 bench/bench_sync.py            # full sizes (about 25 minutes on 2 cores)
    python3 bench/bench_sync.py --quick    # small sizes, a smoke run of the same code

A database is copied from the addon tests' template (``tools/addon_tests.sh`` builds it), the
addon installed, and each case runs in a process of its own so that memory figures are its
own. The Bridge emulator serves the operations over real HTTP on 127.0.0.1 (in a separate
process where the aggregator's own CPU or memory would blur the figure).

Cases (each prints a ``RESULT`` line; the last line sums them up):

- ``first_sync``: first sync of N operations (10,000) from the Bridge emulator, against the
  floor: one batched ``create`` per 500 lines (the engine's page size, same context, a commit
  after each like the engine) of the very lines the engine would create, in the same
  database and run. ``first_sync_vs_floor`` = sync time / floor time.
- ``memory``: first sync of 50,000 operations; ``peak_rss_mb`` = peak resident memory of the
  process during the sync minus its resident memory just before.
- ``incremental``: 20 new operations synced into the account that holds the 50,000 lines,
  against the same into an empty account (median of 7 rounds each, the two accounts alternating);
  ``incremental_vs_empty`` = the ratio. The two accounts read fresh emulator accounts holding
  only the new operations, so the comparison isolates what the engine does with a big journal.
- ``api_calls``: HTTP calls a daily run makes for one Demo Bank connection (5 accounts).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# isort: split
from tools.odoo_setup import TEMPLATE_DB as TEMPLATE  # noqa: E402  (the repository on the path)

PAGE_SIZE = 500


# ----------------------------------------------------------------------------- plumbing


def odoo_args() -> list[str]:
    """Command-line options for an Odoo configured like the addon tests."""
    import odoo  # noqa: PLC0415

    addons = f"{Path(odoo.__file__).parent / 'addons'},{REPO}"
    args = [f"--addons-path={addons}", "--without-demo=all"]
    rc = Path(os.environ.get("ODOO_RC", Path.home() / ".odoorc"))
    if rc.exists():
        args = ["-c", str(rc), *args]
    return args


def psql(sql: str) -> str:
    """Run ``sql`` on the server's ``postgres`` database; returns its output."""
    env = dict(os.environ)
    env.setdefault("PGHOST", "127.0.0.1")
    return subprocess.run(
        ["psql", "-d", "postgres", "-Atc", sql],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()


def prepare_database(db: str) -> None:
    """Copy the template and install the addon (about a minute), or update it."""
    exists = "SELECT 1 FROM pg_database WHERE datname = '{}'"
    # A kept database gets the addon updated to the code being measured.
    mode = "-u" if psql(exists.format(db)) == "1" else "-i"
    if mode == "-i":
        if psql(exists.format(TEMPLATE)) != "1":
            raise SystemExit(f"No template database {TEMPLATE}: run tools/addon_tests.sh first.")
        psql(f'CREATE DATABASE "{db}" TEMPLATE "{TEMPLATE}"')
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    subprocess.run(
        [
            *(sys.executable, "-m", "odoo", *odoo_args(), "-d", db),
            *(mode, "bank_sync_aggregator", "--stop-after-init", "--http-port=0"),
            "--log-level=warn",
        ],
        check=True,
        env=env,
    )


def open_env(db: str):  # -> odoo.api.Environment (and its cursor to close)
    """An Environment on ``db`` as the daily job has it (superuser)."""
    import odoo  # noqa: PLC0415
    from odoo.tools import config  # noqa: PLC0415

    config.parse_config(odoo_args())
    registry = odoo.modules.registry.Registry(db)
    cr = registry.cursor()
    return odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})


def start_emulator_process(user: str, transactions: int) -> tuple[subprocess.Popen, str]:
    """A Bridge emulator in its own process; returns it and its base URL."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bank_sync_bridge.testing.bridge_emulator", "--port", "0"),
            *("--user", user, "--transactions", str(transactions), "--no-rate-limits"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline()
    return process, line.split(" on ", 1)[1].split(" ", 1)[0]


def bridge_client(base_url: str, user: str, clock=None):
    """The Bridge client of the package, pointed at an emulator."""
    from bank_sync_bridge.providers import MemoryTokenStore, ProviderConfig  # noqa: PLC0415
    from bank_sync_bridge.providers.bridgeapi import BridgeProvider  # noqa: PLC0415

    return BridgeProvider(
        ProviderConfig(
            user,
            base_url=base_url,
            credentials={
                "client_id": "emulator_client_id",
                "client_secret": "emulator_client_secret",
            },
            options={"page_size": PAGE_SIZE},
        ),
        clock=clock,
        token_store=MemoryTokenStore(),
    )


def bench_company(env):
    """The main company, synchronisation on, with a Bridge aggregator record."""
    company = env.ref("base.main_company")
    company.bank_sync_enabled = True
    env.ref("base.EUR").active = True
    Aggregator = env["bank.sync.provider"].with_context(active_test=False)
    aggregator = Aggregator.search([("company_id", "=", company.id), ("kind", "=", "bridgeapi")])
    if not aggregator:
        aggregator = Aggregator.create({"name": "Bridge (bench)", "kind": "bridgeapi"})
    aggregator.active = True
    return company, aggregator


def linked_account(env, aggregator, client, *, label: str, code: str, history_days: int = 800):
    """The emulator account called ``label``, linked to a new bank journal."""
    connections = client.list_connections()
    accounts = [a for c in connections for a in client.list_accounts(c.remote_id)]
    remote = next(a for a in accounts if a.label == label)
    connection = aggregator._upsert_connection(client.get_connection(remote.connection_id))
    connection._upsert_accounts([remote])
    account = connection.account_ids.filtered(lambda a: a.remote_id == remote.remote_id)
    return fresh_link(env, account, code, history_days)


def fresh_link(env, account, code: str, history_days: int = 800):
    """Link ``account`` to a new journal as if it had never been synced.

    Emulator ids are deterministic, so an earlier case (or run) may have left this very
    account record with a cursor and lines elsewhere: those are detached (untimed).
    """
    env.cr.execute(
        "UPDATE account_bank_statement_line SET bank_sync_account_id = NULL "
        "WHERE bank_sync_account_id = %s",
        [account.id],
    )
    journal = env["account.journal"].create(
        {
            "name": f"Bench {code}",
            "code": code,
            "type": "bank",
            "currency_id": env.ref("base.EUR").id,
        }
    )
    relink(env, account, journal, date.today() - timedelta(days=history_days))
    return account


def relink(env, account, journal, history_start):
    """``account`` linked to ``journal`` from ``history_start`` as if never synced (committed)."""
    account.write(
        {
            "journal_id": journal.id,
            "history_start_date": history_start,
            "sync_cursor": False,
            "sync_forced_state": False,
            "sync_opening_done": False,
            "sync_needs_opening": False,
        }
    )
    env.cr.commit()


def unique_code(env, prefix: str) -> str:
    """A journal code not used yet (benchmarks may run again on the same database)."""
    for number in range(1, 1000):
        code = f"{prefix}{number}"
        if not env["account.journal"].search_count([("code", "=", code)]):
            return code
    raise RuntimeError("no free journal code")


def rss_kb(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class FloorBetweenPages:
    """The real client; each time the engine asks for its next page (its previous page is
    stored and committed), the floor creates the same page's prepared lines first."""

    def __init__(self, client, floor_page) -> None:
        self.client = client
        self.floor_page = floor_page

    def __getattr__(self, name):
        return getattr(self.client, name)

    def iter_transactions(self, *args, **kwargs):
        """The client's pages, with the floor's work between them."""
        for number, page in enumerate(self.client.iter_transactions(*args, **kwargs)):
            yield page
            self.floor_page(number)


def timed_sync(account, client, profile=True):
    """The daily job's sync of ``account`` and its wall time (with ``profile``, profiled to
    stderr when the ``BENCH_PROFILE`` environment variable is set)."""
    profiler = cProfile.Profile() if profile and os.environ.get("BENCH_PROFILE") else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    run = account._sync_account("cron", client=client, commit=True)
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(50)
    return run, elapsed


# ----------------------------------------------------------------------------- cases


def case_first_sync(db: str, operations: int) -> dict[str, float]:
    """Sync of ``operations`` operations against the floor of creating the same lines."""
    user = f"bench-first-{os.getpid()}"
    process, base_url = start_emulator_process(user, operations)
    try:
        env = open_env(db)
        from odoo.addons.bank_sync_aggregator.const import LINE_CONTEXT  # noqa: PLC0415
        from odoo.addons.bank_sync_aggregator.sync.run import AccountSynchroniser  # noqa: PLC0415

        _company, aggregator = bench_company(env)
        client = bridge_client(base_url, user)
        label = "Compte courant (historique)"
        floor_account = linked_account(
            env, aggregator, client, label=label, code=unique_code(env, "FL")
        )
        # The floor: the very lines the engine would create, in batches of a page, a commit
        # after each, same context. Reading and preparing them is not timed.
        engine = AccountSynchroniser(floor_account, trigger="cron")
        from bank_sync_bridge import sync  # noqa: PLC0415

        vals_pages = []
        for page in client.iter_transactions(floor_account.remote_id):
            booked = [tx for tx in page.transactions if not tx.is_pending and not tx.deleted]
            keys = sync.transaction_keys("bridgeapi", booked)
            vals_pages.append(
                [engine._line_values(key, tx) for key, tx in zip(keys, booked, strict=True)]
            )
        count = sum(len(vals) for vals in vals_pages)
        StLine = env["account.bank.statement.line"].with_context(**LINE_CONTEXT)
        # Warm-up (first-call caches of the ORM), undone: neither side pays it in the figures.
        StLine.create(vals_pages[0][:50])
        env.cr.rollback()
        env.invalidate_all()

        floor_times: list[float] = []

        def floor_page(number: int) -> None:
            if number >= len(vals_pages) or number < len(floor_times):
                return
            started = time.perf_counter()
            StLine.create(vals_pages[number])
            env.cr.commit()
            env.invalidate_all()
            floor_times.append(time.perf_counter() - started)

        # Same journal content for the engine, in its own journal. The floor's pages are
        # created between the engine's pages (timed apart): both sides meet the same load
        # on this shared machine and the same table sizes.
        sync_account = linked_account(
            env, aggregator, client, label=label, code=unique_code(env, "FS")
        )
        sync_account.sync_opening_done = True  # the floor has no opening line either
        env.cr.commit()
        run, total = timed_sync(sync_account, FloorBetweenPages(client, floor_page))
        inside = sum(floor_times)  # the floor's pages that ran during the sync's timing
        for number in range(len(vals_pages)):
            floor_page(number)  # the page(s) after the engine's last one
        floor = sum(floor_times)
        elapsed = total - inside
        if run.state != "done" or run.created_count != count:
            raise RuntimeError(f"sync ended {run.state} with {run.created_count}/{count} lines")
        env.cr.close()
    finally:
        process.terminate()
        process.wait(10)
    return {
        "operations": count,
        "first_sync_s": round(elapsed, 2),
        "floor_s": round(floor, 2),
        "first_sync_vs_floor": round(elapsed / floor, 3),
        "ms_per_line": round(1000 * elapsed / count, 2),
    }


def case_memory(db: str, operations: int) -> dict[str, float]:
    """Peak memory growth of a first sync of ``operations`` operations."""
    user = f"bench-mem-{os.getpid()}"
    process, base_url = start_emulator_process(user, operations)
    try:
        env = open_env(db)
        _company, aggregator = bench_company(env)
        client = bridge_client(base_url, user)
        account = linked_account(
            env,
            aggregator,
            client,
            label="Compte courant (historique)",
            code=unique_code(env, "BIG"),
        )
        account.name = "Bench 50k"
        env.cr.commit()
        env.invalidate_all()
        # Reset the kernel's peak counter, so the peak below is the sync's own.
        Path("/proc/self/clear_refs").write_text("5")
        before = rss_kb("VmRSS")
        started = time.perf_counter()
        run = account._sync_account("cron", client=client, commit=True)
        elapsed = time.perf_counter() - started
        peak = rss_kb("VmHWM")
        if run.state != "done":
            raise RuntimeError(f"sync ended {run.state}: {run.error}")
        result = {
            "operations": run.fetched_count,
            "lines": run.created_count,
            "memory_sync_s": round(elapsed, 1),
            "rss_before_mb": round(before / 1024, 1),
            "peak_rss_mb": round((peak - before) / 1024, 1),
        }
        env.cr.close()
    finally:
        process.terminate()
        process.wait(10)
    return result


def case_incremental(db: str, new_operations: int = 20, rounds: int = 7) -> dict[str, float]:
    """20 new operations into the 50,000-line account, against an empty account."""
    from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator  # noqa: PLC0415

    env = open_env(db)
    _company, aggregator = bench_company(env)
    big = env["bank.sync.account"].search([("name", "=", "Bench 50k")], limit=1, order="id desc")
    if not big:
        raise SystemExit("Run the memory case first: it builds the 50,000-line account.")
    lines = env["account.bank.statement.line"].search_count([("bank_sync_account_id", "=", big.id)])
    user = f"bench-inc-{os.getpid()}"
    with BridgeEmulator(rate_limits=False) as emulator:
        item = emulator.connect_item(user)
        # Emulator ids are deterministic: skip those the memory case's emulator already gave,
        # so that keys (aggregator, account id, operation id) stay unique as at a real bank.
        taken = set(
            env["bank.sync.account"].with_context(active_test=False).search([]).mapped("remote_id")
        )
        # Ids an earlier run of this case used are in keys only: remember the highest.
        params = env["ir.config_parameter"].sudo()
        used_up_to = int(params.get_param("bench_sync.incremental_last_id", "0"))
        fresh = []
        for name in ("Incremental big", "Incremental empty"):
            remote = emulator.add_account_with_transactions(
                0, user_ref=user, name="Skipped id", item_id=item.id, days=1
            )
            while str(remote.id) in taken or remote.id <= used_up_to:
                remote = emulator.add_account_with_transactions(
                    0, user_ref=user, name="Skipped id", item_id=item.id, days=1
                )
            remote.name = name  # only the kept account carries the name looked up below
            fresh.append(remote)
        params.set_param("bench_sync.incremental_last_id", str(max(r.id for r in fresh)))
        client = bridge_client(emulator.base_url, user, clock=emulator.clock)
        empty = linked_account(
            env, aggregator, client, label="Incremental empty", code=unique_code(env, "EMP")
        )
        # The big account now reads a fresh remote account: its journal keeps 50,000 lines
        # (its own remote id is put back at the end, so the case can run again).
        original = {"remote_id": big.remote_id, "connection_id": big.connection_id.id}
        big.write(
            {
                "connection_id": empty.connection_id.id,
                "remote_id": str(fresh[0].id),
                "sync_cursor": False,
                "sync_opening_done": True,
            }
        )
        empty.sync_opening_done = True
        env.cr.commit()
        timings: dict[str, list[float]] = {"big": [], "empty": []}
        for _round in range(rounds):
            # Runs come well apart: the client's one-minute overlap re-reads nothing of the
            # previous round (10 minutes a round keeps the 2-hour token valid throughout, so
            # no renewal falls on one side only).
            emulator.advance(minutes=10)
            for key, account, remote in (("big", big, fresh[0]), ("empty", empty, fresh[1])):
                for number in range(new_operations):
                    emulator.add_transaction(remote.id, f"-{number + 1}.50", f"Op {number}")
                env.invalidate_all()
                run, elapsed = timed_sync(account, client)
                timings[key].append(elapsed)
                if run.state != "done" or run.created_count != new_operations:
                    raise RuntimeError(
                        f"{key}: {run.state} {run.created_count}/{run.fetched_count} "
                        f"{run.window_basis} {run.date_from} {run.error or ''}"
                    )
    big.write(original)
    env.cr.commit()
    env.cr.close()
    big_s, empty_s = statistics.median(timings["big"]), statistics.median(timings["empty"])
    return {
        "big_account_lines": lines,
        "incremental_big_s": round(big_s, 3),
        "incremental_empty_s": round(empty_s, 3),
        "incremental_vs_empty": round(big_s / empty_s, 3),
    }


def case_api_calls(db: str) -> dict[str, float]:
    """HTTP calls of a daily run for one connection (after its first sync)."""
    from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator  # noqa: PLC0415

    env = open_env(db)
    _company, aggregator = bench_company(env)
    user = f"bench-calls-{os.getpid()}"
    with BridgeEmulator(rate_limits=False) as emulator:
        item = emulator.connect_item(user)
        client = bridge_client(emulator.base_url, user, clock=emulator.clock)
        connection = aggregator._upsert_connection(client.get_connection(str(item.id)))
        remote_ids = {a.remote_id for a in client.list_accounts(str(item.id))}
        connection._upsert_accounts(client.list_accounts(str(item.id)))
        accounts = connection.account_ids.filtered(lambda a: a.remote_id in remote_ids)
        for account in accounts:
            fresh_link(env, account, unique_code(env, "API"), history_days=90)
        accounts._sync_accounts("cron", client=client, commit=True)
        emulator.advance(hours=24)
        for account in accounts.filtered(lambda a: a.account_type == "checking"):
            emulator.add_transaction(int(account.remote_id), "-12.00", "Daily fee")
        before = len(emulator.requests)
        runs = accounts._sync_accounts("cron", client=client, commit=True)
        calls = len(emulator.requests) - before
        if set(runs.mapped("state")) != {"done"}:
            raise RuntimeError(f"daily run: {runs.mapped('state')}")
    env.cr.close()
    return {"accounts_per_connection": len(runs), "api_calls_per_connection": calls}


CASES = {
    "first_sync": case_first_sync,
    "memory": case_memory,
    "incremental": case_incremental,
    "api_calls": case_api_calls,
}


def run_case(name: str, db: str, quick: bool) -> dict[str, float]:
    """Run one case in its own process and return its figures."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    args = [sys.executable, __file__, "--db", db, "--case", name]
    if quick:
        args.append("--quick")
    done = subprocess.run(args, check=False, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"case {name} failed")
    output = done.stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    print(line, flush=True)
    return {k: float(v) for k, v in (part.split("=") for part in line.split()[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="bsa_bench", help="benchmark database (kept for reruns)")
    parser.add_argument("--case", choices=sorted(CASES), help="run only this case, in-process")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--operations", type=int, help="operations of the first_sync case")
    args = parser.parse_args()
    first_ops, big_ops = (1_000, 3_000) if args.quick else (10_000, 50_000)
    first_ops = args.operations or first_ops
    if args.case:
        kwargs: dict[str, int] = {}
        if args.case == "first_sync":
            kwargs["operations"] = first_ops
        elif args.case == "memory":
            kwargs["operations"] = big_ops
        result = CASES[args.case](args.db, **kwargs)
        print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))
        return 0
    prepare_database(args.db)
    figures: dict[str, float] = {}
    for name in ("first_sync", "memory", "incremental", "api_calls"):
        figures.update(run_case(name, args.db, args.quick))
    summary = {
        key: figures[key]
        for key in (
            "first_sync_vs_floor",
            "incremental_vs_empty",
            "peak_rss_mb",
            "api_calls_per_connection",
        )
    }
    print(json.dumps(figures, indent=1), file=sys.stderr)
    print("RESULT " + " ".join(f"{key}={value:g}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
