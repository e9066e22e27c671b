#!/usr/bin/env python3
"""Benchmark of matching imported operations with the books, on the machine's real Odoo 18.

Usage::

    python3 bench/bench_reconcile.py              # a year of operations (about 10 minutes)
    python3 bench/bench_reconcile.py --days 90    # a quarter (a smoke run of the same code)

A database is copied from the addon tests' template (``tools/addon_tests.sh`` builds it) and
the addon installed (kept for reruns, like ``bench_sync.py``). Each run makes a new French
company that uses the Sandbox aggregator, reads the Sandbox's current account for the period,
and posts the customer invoices and vendor bills those operations pay
(``tools/reconcile_books.py``), with traps in realistic proportions: partial payments, transfers
paying two invoices, amounts two open invoices of a customer share, transfers quoting no
number or a mistyped one, invoices issued in dollars and paid in euros. Then the account is
synchronised through the real engine (``bank.sync.account._sync_account``, the daily job's
path, a commit per page), each time into a new journal: once untimed (warm-up), then in
turn (``--rounds``, 4 by default, each round in the other order than the one before) with the
company's "Reconcile exact matches" setting off (no matching at all) and on, and last, for the
record, with matching deciding but reconciling nothing.

The last line::

    RESULT auto_reconciled_pct=.. wrong_matches=.. suggestion_top1_pct=.. import_overhead=..

- ``auto_reconciled_pct``: of the operations whose counterpart in the books is exact and
  unique (an invoice or bill quoted with its amount, two invoices quoted with their total, a
  partner's only open invoice of that amount), the share reconciled automatically with it;
- ``wrong_matches``: automatic reconciliations with anything else than what the operation
  really pays (any line of the journal);
- ``suggestion_top1_pct``: of the other operations that pay documents of the books (not
  reconciled automatically), the share whose first suggestion in the match window
  (``bank.sync.match.wizard``, the order a person sees) is exactly what they pay;
- ``import_overhead``: time per imported line with matching divided by the same without,
  minus one (the same operations, the same run, after a warm-up sync; the median of each
  side's rounds, taken in turn so that the machine's load and the tables' growth weigh on
  both).

Targets: ``wrong_matches=0``, ``auto_reconciled_pct`` >= 85, ``suggestion_top1_pct`` >= 90,
``import_overhead`` <= 0.25. Lines before it give the figures per case and the raw times.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# isort: split
from bench_sync import open_env, prepare_database, relink, unique_code  # noqa: E402
from bench_sync import timed_sync as bench_sync_timed  # noqa: E402

from tools.reconcile_books import Traps, book, judge, plan_books  # noqa: E402

#: Traps set on the books' side (out of 100 eligible operations, see reconcile_books.Traps);
#: with the Sandbox's own (15 % of customer transfers pay two invoices, 5 % quote no number,
#: 3 % mistype it), about one operation in six paying documents is not the plain case.
TRAPS = Traps(partial=3, ambiguous=40, foreign_currency=2)


def new_company(env, name: str):
    """A French company with its chart of accounts, using the Sandbox aggregator."""
    eur = env.ref("base.EUR")
    eur.active = True
    company = (
        env["res.company"]
        .with_context(chart_template_load=True)
        .create({"name": name, "country_id": env.ref("base.fr").id, "currency_id": eur.id})
    )
    env["account.chart.template"].try_loading("fr", company, install_demo=False)
    company.bank_sync_enabled = True
    aggregator = env["bank.sync.provider"].create(
        {"name": "Sandbox (bench)", "kind": "sandbox", "company_id": company.id}
    )
    return company, aggregator


def sandbox_checking(aggregator, nonce: str):
    """A Sandbox connection (connected two hours ago) and its euro current account."""
    from bank_sync_bridge.providers.sandbox import make_connection_id  # noqa: PLC0415

    client = aggregator._get_client()
    connected_at = datetime.now(timezone.utc) - timedelta(hours=2)
    remote_id = make_connection_id(
        aggregator._get_user_ref(), "BNPAFRPP", "success", connected_at, nonce
    )
    connection = aggregator._upsert_connection(client.get_connection(remote_id))
    connection._upsert_accounts(client.list_accounts(remote_id))
    account = connection.account_ids.filtered(
        lambda a: a.account_type == "checking" and a.currency_code == "EUR"
    )
    return client, account


def link_new_journal(env, company, account, start):
    """Link ``account`` to a new bank journal as if it had never been synced. The lines of an
    earlier link are deleted, their reconciliations undone: still waiting for their
    counterpart, they would claim the same invoices as the new lines, and matching rightly
    leaves an invoice two lines could pay to a person."""
    earlier = env["account.bank.statement.line"].search([("bank_sync_account_id", "=", account.id)])
    # (What an earlier sync reconciled is undone first: the invoices it paid are open again
    # for the next one, as they were for the first.)
    earlier.filtered("is_reconciled").action_undo_reconciliation()
    earlier.with_context(force_delete=True).unlink()
    env.cr.commit()
    journal = (
        env["account.journal"]
        .with_company(company)
        .create(
            {
                "name": f"Bench {account.id} {unique_code(env, 'R')}",
                "code": unique_code(env, "R"),
                "type": "bank",
                "company_id": company.id,
            }
        )
    )
    relink(env, account, journal, start)
    env.invalidate_all()
    return journal


@contextlib.contextmanager
def decisions_only():
    """The synchronisation's matching decides but reconciles nothing (for this process)."""
    from odoo.addons.bank_sync_aggregator.sync import pages  # noqa: PLC0415

    original = pages.match_lines
    pages.match_lines = lambda lines, apply=True, fresh=False: original(
        lines, apply=False, fresh=fresh
    )
    try:
        yield
    finally:
        pages.match_lines = original


def timed_sync(env, account, client):
    """:func:`bench_sync.timed_sync`, which must end ``done``."""
    run, elapsed = bench_sync_timed(account, client, profile=False)
    if run.state != "done":
        raise RuntimeError(f"sync ended {run.state}: {run.error}")
    env.invalidate_all()
    return run, elapsed


def measure(db: str, days: int, rounds: int) -> dict[str, float]:
    env = open_env(db)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    company, aggregator = new_company(env, f"Bench reconcile {stamp}")
    env = env(context={"allowed_company_ids": [company.id]})
    aggregator = aggregator.with_env(env)
    client, account = sandbox_checking(aggregator, stamp[-6:])
    start = datetime.now(timezone.utc).date() - timedelta(days=days)
    operations = [
        tx
        for page in client.iter_transactions(account.remote_id, date_from=start)
        for tx in page.transactions
        if not (tx.deleted or tx.is_pending or tx.booking_date < start)
    ]
    documents, truths = plan_books(operations, TRAPS)
    began = time.perf_counter()
    moves = book(env, company.with_env(env), documents)
    env.cr.commit()
    booked_s = time.perf_counter() - began
    print(
        f"books: {len(documents)} invoices and bills posted in {booked_s:.1f} s, paid by "
        f"{len(truths)} of {len(operations)} operations",
        flush=True,
    )

    def sync(matching, decide_only=False):
        """One sync into a new journal: the run, its time, the journal."""
        company.with_env(env).bank_sync_auto_reconcile = matching
        journal = link_new_journal(env, company, account, start)
        with decisions_only() if decide_only else contextlib.nullcontext():
            run, elapsed = timed_sync(env, account, client)
        return run, elapsed, journal

    # A first sync, not timed: the process's first import pays the ORM's and PostgreSQL's
    # warm-up (6 s of 20 measured), which would flatter whichever side came second.
    sync(False)
    # Then the two sides in turn, each round in the other order than the one before, so that
    # whatever drifts during the run (the machine's load, the tables' sizes) weighs on both:
    # each side's figure is its median. The last round ends with matching: its journal is the
    # one judged (a new link deletes the lines of the journal before).
    times = {False: [], True: []}
    runs = {}
    for round_ in range(rounds):
        for matching in (False, True) if (rounds - 1 - round_) % 2 == 0 else (True, False):
            run, elapsed, journal = sync(matching)
            times[matching].append(elapsed)
            runs[matching] = (run, journal)
    plain_s, matched_s = statistics.median(times[False]), statistics.median(times[True])
    (plain, _journal), (matched, journal) = runs[False], runs[True]
    if plain.created_count != matched.created_count:
        raise RuntimeError(
            f"{plain.created_count} lines without matching, {matched.created_count} with"
        )
    from bank_sync_bridge.sync import sync_key  # noqa: PLC0415

    lines = env["account.bank.statement.line"].search(
        [("journal_id", "=", journal.id), ("bank_sync_status", "=", "booked")]
    )

    def key_of(remote_id):
        return sync_key("sandbox", account.remote_id, remote_id)

    verdict = judge(env, lines, truths, moves, key_of)
    env.cr.rollback()
    # For the record, not a target: matching's decisions alone (open items read, operations
    # compared), the reconciliations not applied; what is left of the overhead is Odoo's own
    # accounting reconciling the sure matches. Once, after the verdict (a new link deletes
    # the lines of the journal judged).
    _decided, decided_s, _journal = sync(True, decide_only=True)
    for case, counts in sorted(verdict.by_case.items()):
        print(
            f"case {case:<21} operations={counts['operations']} auto={counts['auto']} "
            f"suggested={counts['suggested']} top1={counts['top1']}",
            flush=True,
        )
    for wrong in verdict.wrong_lines:
        print(f"WRONG {wrong}", flush=True)
    for miss in verdict.misses:  # (or an exact counterpart not reconciled automatically)
        print(f"not reconciled automatically: {miss}", flush=True)
    lines_count = matched.created_count
    plain_ms, matched_ms = 1000 * plain_s / lines_count, 1000 * matched_s / lines_count
    traps = verdict.paying - sum(
        verdict.by_case.get(case, {}).get("operations", 0) for case in ("reference", "bill")
    )
    print(
        f"sync (median of {rounds} each): {lines_count} lines, {plain_s:.1f} s without "
        f"matching ({plain_ms:.2f} ms per line), {decided_s:.1f} s deciding only "
        f"({1000 * decided_s / lines_count:.2f} ms per line, "
        f"overhead {decided_s / plain_s - 1:.3f}), "
        f"{matched_s:.1f} s with matching ({matched_ms:.2f} ms per line; "
        f"{matched.reconciled_count} reconciled, {matched.suggested_count} suggested); "
        f"{verdict.paying} operations pay documents, {verdict.exact} exactly, "
        f"{traps} ({verdict.pct(traps, verdict.paying)} %) not the plain case",
        flush=True,
    )
    print(
        "sync times (s): without matching "
        + ", ".join(f"{t:.1f}" for t in times[False])
        + "; with matching "
        + ", ".join(f"{t:.1f}" for t in times[True]),
        flush=True,
    )
    print(
        f"suggestions: first one right for {verdict.top1} of {verdict.others} operations not "
        "reconciled automatically",
        flush=True,
    )
    env.cr.close()
    return {
        "auto_reconciled_pct": verdict.pct(verdict.auto_exact, verdict.exact),
        "wrong_matches": verdict.wrong,
        "suggestion_top1_pct": verdict.pct(verdict.top1, verdict.others),
        "import_overhead": round(matched_ms / plain_ms - 1, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db", default="bsa_bench_reconcile", help="benchmark database (kept for reruns)"
    )
    parser.add_argument("--days", type=int, default=365, help="days of operations (a year)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="timed syncs of each side, in turn (the median is kept; even: both sides take "
        "the same places on average)",
    )
    args = parser.parse_args()
    prepare_database(args.db)
    result = measure(args.db, args.days, args.rounds)
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
