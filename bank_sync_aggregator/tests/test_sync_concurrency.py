"""Runs in other transactions and other processes than the test's own.

These tests need data that other database connections can see, so their fixture is committed
through a separate cursor (never the test's) and removed afterwards. The imports run:

- in a thread with its own cursor, held in the middle of a page while a second worker tries
  the same account (it must skip it, not wait nor duplicate);
- in separate ``odoo`` processes doing what the daily job does (a commit per page): one is
  killed with SIGKILL in the middle of a long import and a rerun must give exactly the
  aggregator's operations; two started together on one account must too.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from odoo import SUPERUSER_ID, api
from odoo.addons.bank_sync_aggregator.sync.run import ACCOUNT_LOCK_NAMESPACE, AccountSynchroniser
from odoo.tests import TransactionCase, tagged
from odoo.tools import config

from bank_sync_bridge.model import Cursor
from bank_sync_bridge.providers.sandbox import make_connection_id
from bank_sync_bridge.sync import sync_key

PAGE_SIZE = 10

# What the daily job does for one account, in a process of its own (the fixture's aggregator
# is the stateless sandbox, so this process sees exactly the operations the test process sees).
WORKER = """
import sys
import odoo
from odoo.tools import config
config.parse_config(sys.argv[3:])
registry = odoo.modules.registry.Registry(sys.argv[1])
with registry.cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    account = env["bank.sync.account"].browse(int(sys.argv[2]))
    client = account.connection_id.provider_id._get_client()
    client.page_size = PAGE_SIZE
    run = account._sync_account("cron", client=client, commit=True)
    print("RUN", run.state, run.created_count, run.error or "")
""".replace("PAGE_SIZE", str(PAGE_SIZE))


# Inserted in WORKER: the first commit (the first page stored) is followed by a pause.
PAUSE_AFTER_COMMIT = """
    import pathlib, time
    commit = cr.commit
    def commit_then_pause():
        commit()
        committed, go_on = pathlib.Path("{0}"), pathlib.Path("{1}")
        if not committed.exists():
            committed.touch()
            deadline = time.monotonic() + 120
            while not go_on.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    cr.commit = commit_then_pause
"""


@tagged("post_install", "-at_install")
class TestSyncConcurrency(TransactionCase):
    def setUp(self):
        super().setUp()
        self.fixture = self._commit_fixture()
        self.addCleanup(self._drop_fixture)

    # ------------------------------------------------------------------ fixture

    def _env(self, cr):
        return api.Environment(cr, SUPERUSER_ID, {})

    def _commit_fixture(self, history_days=60):
        with self.registry.cursor() as cr:
            env = self._env(cr)
            company = env.ref("base.main_company")
            self.was_enabled = company.bank_sync_enabled
            company.bank_sync_enabled = True
            eur = env.ref("base.EUR")
            eur.active = True
            aggregator = env["bank.sync.provider"].create(
                {"name": "Sandbox race", "kind": "sandbox", "company_id": company.id}
            )
            now = datetime.now(timezone.utc)
            nonce = f"{os.getpid() % 0xFFFFFF:06x}"
            remote_id = make_connection_id(
                aggregator._get_user_ref(), "SOGEFRPP", "success", now - timedelta(hours=1), nonce
            )
            client = aggregator._get_client()
            connection = aggregator._upsert_connection(client.get_connection(remote_id))
            connection._upsert_accounts(client.list_accounts(remote_id))
            account = connection.account_ids.filtered(lambda a: a.account_type == "checking")
            journal = env["account.journal"].create(
                {
                    "name": "Race bank",
                    "code": "RACE",
                    "type": "bank",
                    "company_id": company.id,
                    "currency_id": eur.id,
                }
            )
            account.write(
                {
                    "journal_id": journal.id,
                    "history_start_date": now.date() - timedelta(days=history_days),
                }
            )
            return {
                "aggregator": aggregator.id,
                "connection": connection.id,
                "account": account.id,
                "journal": journal.id,
                "history_start": account.history_start_date,
            }

    def _drop_fixture(self):
        with self.registry.cursor() as cr:
            env = self._env(cr)
            ids = self.fixture
            env["account.bank.statement.line"].search(
                [("journal_id", "=", ids["journal"])]
            ).unlink()
            env["account.bank.statement"].search([("journal_id", "=", ids["journal"])]).unlink()
            connection = env["bank.sync.connection"].browse(ids["connection"])
            connection.account_ids.write({"journal_id": False})
            env["account.journal"].browse(ids["journal"]).unlink()
            connection.unlink()
            env["bank.sync.provider"].browse(ids["aggregator"]).unlink()
            env.ref("base.main_company").bank_sync_enabled = self.was_enabled

    # ------------------------------------------------------------------ helpers

    def _read(self, func):
        """Run ``func(env)`` in a fresh transaction: what other workers see."""
        with self.registry.cursor() as cr:
            return func(self._env(cr))

    def _line_keys(self, env):
        env.cr.execute(
            "SELECT bank_sync_key FROM account_bank_statement_line "
            "WHERE journal_id = %s AND bank_sync_status = 'booked'",
            [self.fixture["journal"]],
        )
        return [row[0] for row in env.cr.fetchall()]

    def _remote_keys(self, env, up_to=None):
        """Keys of the booked operations the aggregator reports; with ``up_to`` (the sandbox
        cursor's sort position), only those of the pages up to that position."""
        account = env["bank.sync.account"].browse(self.fixture["account"])
        client = account.connection_id.provider_id._get_client()
        keys = set()
        for page in client.iter_transactions(
            account.remote_id, date_from=self.fixture["history_start"]
        ):
            for tx in page.transactions:
                position = [tx.booking_date.isoformat(), tx.remote_id]
                if up_to is not None and position > list(up_to):
                    continue
                if not tx.is_pending and not tx.deleted:
                    keys.add(sync_key("sandbox", account.remote_id, tx.remote_id))
        return keys

    def _worker(self, pause_after_commit=None):
        """A process doing the daily job's import of the account; with ``pause_after_commit``
        (two paths), it creates the first file right after its first page is committed and
        waits for the second before going on."""
        args = [f"--addons-path={config['addons_path']}"]
        for option in ("db_host", "db_port", "db_user", "db_password"):
            if config.get(option):
                args.append(f"--{option}={config[option]}")
        script = WORKER
        if pause_after_commit:
            script = WORKER.replace(
                "    run = account._sync_account(",
                PAUSE_AFTER_COMMIT.format(*pause_after_commit) + "    run = account._sync_account(",
            )
        return subprocess.Popen(
            [sys.executable, "-c", script, self.env.cr.dbname, str(self.fixture["account"]), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _assert_exactly_remote(self):
        keys = self._read(self._line_keys)
        self.assertEqual(len(keys), len(set(keys)), "no operation imported twice")
        self.assertEqual(set(keys), self._read(self._remote_keys))

    # ------------------------------------------------------------------ tests

    def test_a_second_worker_skips_the_account_being_synced(self):
        account_id = self.fixture["account"]
        with self.registry.cursor() as first_worker:
            # The first worker is in the middle of the account's import: it holds its lock.
            first_worker.execute(
                "SELECT pg_advisory_lock(%s, %s)", [ACCOUNT_LOCK_NAMESPACE, account_id]
            )
            started = time.monotonic()
            second = self._read(
                lambda env: (
                    env["bank.sync.account"]
                    .browse(account_id)
                    ._sync_account("cron", commit=False)
                    .state
                )
            )
            self.assertLess(time.monotonic() - started, 10, "the second worker did not wait")
            self.assertEqual(second, "skipped")
            self.assertFalse(self._read(self._line_keys), "and imported nothing")
            # (this cursor's connection goes back to Odoo's pool: its lock must not stay)
            first_worker.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [ACCOUNT_LOCK_NAMESPACE, account_id]
            )
        # Once the first worker is gone, the account syncs normally.
        done = self._read(
            lambda env: (
                env["bank.sync.account"]
                .browse(account_id)
                ._sync_account("cron", commit=False)
                .state
            )
        )
        self.assertEqual(done, "done")
        self._assert_exactly_remote()

    def test_the_account_is_free_as_soon_as_a_synchronisation_ends(self):
        """A Sync now right after the daily job (or the next retry) is not skipped: the lock
        goes when the synchronisation ends, not whenever PostgreSQL gets round to ending the
        lock's session."""

        account_id = self.fixture["account"]

        def lock_then_look(env):
            account = env["bank.sync.account"].browse(account_id)
            free = []
            with self.registry.cursor() as other_worker:
                for _attempt in range(20):
                    synchroniser = AccountSynchroniser(account, trigger="cron", commit=False)
                    self.assertTrue(synchroniser.lock())
                    synchroniser.unlock()
                    # Another worker, already connected, looks at once.
                    other_worker.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", [ACCOUNT_LOCK_NAMESPACE, account_id]
                    )
                    free.append(other_worker.fetchone()[0])
                    other_worker.execute("SELECT pg_advisory_unlock_all()")
            return free

        free = self._read(lock_then_look)
        self.assertEqual(free.count(False), 0, "every worker found the account free")

    def test_a_second_worker_between_two_pages_leaves_the_live_import_alone(self):
        """The daily job commits after each page: a second worker arriving right after such a
        commit must find the account taken, not take the live run for a dead one."""
        account_id = self.fixture["account"]
        with tempfile.TemporaryDirectory() as folder:
            committed, go_on = Path(folder) / "committed", Path(folder) / "go_on"
            worker = self._worker(pause_after_commit=(committed, go_on))
            try:
                deadline = time.monotonic() + 180
                while not committed.exists() and worker.poll() is None:
                    self.assertLess(time.monotonic(), deadline, "the first page was committed")
                    time.sleep(0.1)
                self.assertIsNone(worker.poll(), "the first worker is between two pages")
                second = self._read(
                    lambda env: (
                        env["bank.sync.account"]
                        .browse(account_id)
                        ._sync_account("cron", commit=False)
                        .state
                    )
                )
            finally:
                go_on.touch()
            output = worker.communicate(timeout=300)[0]
        self.assertEqual(worker.returncode, 0, output[-2000:])
        self.assertEqual(second, "skipped")
        self.assertIn("RUN done", output)
        runs = self._read(
            lambda env: (
                env["bank.sync.run"]
                .search([("account_id", "=", account_id)])
                .mapped(lambda run: (run.state, run.error or ""))
            )
        )
        self.assertEqual(sorted(state for state, _error in runs), ["done", "skipped"], runs)
        self._assert_exactly_remote()

    def test_two_processes_on_one_account_import_each_operation_once(self):
        workers = [self._worker(), self._worker()]
        outputs = [worker.communicate(timeout=300)[0] for worker in workers]
        for worker, output in zip(workers, outputs, strict=True):
            self.assertEqual(worker.returncode, 0, output[-2000:])
        self._assert_exactly_remote()
        states = self._read(
            lambda env: (
                env["bank.sync.run"]
                .search([("account_id", "=", self.fixture["account"])])
                .mapped("state")
            )
        )
        self.assertIn("done", states, outputs)
        self.assertNotIn("failed", states, outputs)

    def test_a_process_killed_mid_import_loses_and_duplicates_nothing(self):
        total = len(self._read(self._remote_keys))
        self.assertGreater(total, 4 * PAGE_SIZE, "a long enough import to kill")
        worker = self._worker()
        deadline = time.monotonic() + 240
        count = 0
        while time.monotonic() < deadline and worker.poll() is None:
            count = len(self._read(self._line_keys))
            if count >= 2 * PAGE_SIZE:
                break
            time.sleep(0.1)
        self.assertIsNone(worker.poll(), "the import was still running when killed")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
        self.assertGreater(count, 0)

        # What the kill left: whole pages, and the cursor of the last one stored with them.
        def state(env):
            account = env["bank.sync.account"].browse(self.fixture["account"])
            return account.sync_cursor, self._line_keys(env)

        stored_cursor, keys = self._read(state)
        self.assertTrue(stored_cursor)
        self.assertLess(len(keys), total, "the kill happened before the end")
        self.assertEqual(len(keys), len(set(keys)))
        position = Cursor.loads(stored_cursor).value["after"]
        self.assertTrue(position, "a mid-stream cursor: the position after the stored page")
        expected = self._read(lambda env: self._remote_keys(env, position))
        self.assertEqual(set(keys), expected, "lines and cursor were stored together")

        rerun = self._worker()
        output = rerun.communicate(timeout=300)[0]
        self.assertEqual(rerun.returncode, 0, output[-2000:])
        self.assertIn("RUN done", output)
        self._assert_exactly_remote()
        runs = self._read(
            lambda env: {
                run.state: run.error or ""
                for run in env["bank.sync.run"].search(
                    [("account_id", "=", self.fixture["account"])]
                )
            }
        )
        self.assertIn("Interrupted", runs.get("failed", ""), "the killed run is marked")
