"""Odoo 18 as a library and as a command, for the tools (demo, install checks, translations,
benchmarks): find it, build and copy the test template database, run ``python -m odoo``, open an
environment, start a server on 127.0.0.1.

The template (``TEMPLATE_DB``) is the database every addon test, the demo and the install checks
start from: Odoo with Accounting and the French chart of accounts module installed, no demo
data, no company using the French chart yet. It is built once (about a minute and a half) and
copied with ``CREATE DATABASE ... TEMPLATE`` (under a second).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODULE = "bank_sync_aggregator"
#: Odoo 18: l10n_fr is the base part, this the chart (French accounts, taxes, journals).
FRENCH_CHART_MODULE = "l10n_fr_account"
#: What the template database has installed (tools/addon_tests.sh builds the same one).
TEMPLATE_MODULES = ("account", FRENCH_CHART_MODULE)
TEMPLATE_DB = os.environ.get("BSA_TEMPLATE_DB", "bsa_tpl_account_fr_18")


class OdooSetupError(Exception):
    """A failure explained to the user (printed without a traceback)."""


def load_odoo() -> Any:
    """The ``odoo`` package (version 18), or a OdooSetupError saying how to get one."""
    try:
        import odoo  # noqa: PLC0415
    except ImportError as error:
        raise OdooSetupError(
            f"Odoo is not importable by {sys.executable}: install Odoo 18 (see DEVELOPERS.md) "
            "or run with ODOO_PYTHON=/path/to/odoo/python make demo."
        ) from error
    if odoo.release.version_info[0] != 18:
        raise OdooSetupError(
            f"Odoo 18 is needed; {sys.executable} imports Odoo {odoo.release.version}"
        )
    return odoo


def odoo_args(odoo: Any, db: str) -> list[str]:
    """Command line options shared by the library, the installer and the server."""
    rc_file = Path(os.environ.get("ODOO_RC") or Path.home() / ".odoorc")
    args = [f"-c{rc_file}"] if rc_file.is_file() else []
    if not rc_file.is_file():
        args += [
            f"--db_host={os.environ.get('PGHOST', '127.0.0.1')}",
            f"--db_port={os.environ.get('PGPORT', '5432')}",
            f"--db_user={os.environ.get('PGUSER') or os.environ.get('USER') or 'odoo'}",
        ]
    addons = f"{Path(odoo.__file__).parent / 'addons'},{REPO}"
    return [*args, f"--addons-path={addons}", f"--database={db}", "--without-demo=all"]


def postgres(odoo: Any) -> Any:
    """A cursor factory on the ``postgres`` maintenance database (autocommit)."""
    return odoo.sql_db.db_connect("postgres")


def db_exists(odoo: Any, name: str) -> bool:
    with contextlib.closing(postgres(odoo).cursor()) as cr:
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return bool(cr.fetchone())


def drop_db(odoo: Any, name: str) -> None:
    """Drop ``name`` (closing what still uses it, e.g. an Odoo left open on an earlier demo)."""
    odoo.sql_db.close_db(name)
    with contextlib.closing(postgres(odoo).cursor()) as cr:
        cr._cnx.autocommit = True
        cr.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    filestore = Path(odoo.tools.config.filestore(name))
    if filestore.exists():
        shutil.rmtree(filestore)


def copy_template(odoo: Any, template: str, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE template``, retried while another developer's copy
    holds the template for a moment (PostgreSQL refuses a template in use)."""
    for attempt in range(10):
        try:
            with contextlib.closing(postgres(odoo).cursor()) as cr:
                cr._cnx.autocommit = True
                cr.execute(f'CREATE DATABASE "{name}" ENCODING \'unicode\' TEMPLATE "{template}"')
            break
        except Exception as error:
            if "being accessed by other users" not in str(error) or attempt == 9:
                raise OdooSetupError(f"Could not copy the template {template}: {error}") from error
            time.sleep(1.5)
    # CREATE DATABASE copies the tables, not the filestore: copy the template's attachments
    # too, so the new database never points at missing files. A filestore left under this
    # name without its database (an interrupted run) is stale: it is replaced.
    source = Path(odoo.tools.config.filestore(template))
    target = Path(odoo.tools.config.filestore(name))
    if target.exists():
        shutil.rmtree(target)
    if source.exists():
        shutil.copytree(source, target)


def run_odoo(args: list[str], log: Path, what: str) -> None:
    """Run ``python -m odoo`` to completion, its output in ``log``; OdooSetupError on failure."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    with log.open("a", encoding="utf-8") as out:
        status = subprocess.run(
            [sys.executable, "-m", "odoo", *args],
            check=False,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    errors = log_errors(log)
    if status != 0 or errors:
        raise OdooSetupError(f"{what} failed (exit code {status}):\n" + "\n".join(errors[-15:]))


def log_errors(log: Path) -> list[str]:
    """ERROR and CRITICAL lines of an Odoo log, with the traceback lines that follow them."""
    lines: list[str] = []
    keep = False
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if re.search(r" (ERROR|CRITICAL) ", line):
            keep = True
            lines.append(line)
        elif keep and not re.match(r"\d{4}-\d\d-\d\d ", line):
            lines.append(line)
        else:
            keep = False
    return lines


@contextlib.contextmanager
def environment(odoo: Any, db: str, uid: int | None = None, company: Any = None) -> Iterator[Any]:
    """An environment on ``db`` in one transaction, committed when the block succeeds."""
    registry = odoo.modules.registry.Registry(db)
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, uid or odoo.SUPERUSER_ID, {})
        if company:
            env = env(context=dict(env.context, allowed_company_ids=[company]))
        yield env


def build_template(odoo: Any, log: Path) -> bool:
    """Build ``TEMPLATE_DB`` when it is missing; True when it was built now.

    Built under another name and renamed when complete, so that an interrupted build never
    leaves a broken template behind.
    """
    if db_exists(odoo, TEMPLATE_DB):
        return False
    building = f"{TEMPLATE_DB}_building_{os.getpid()}"
    drop_db(odoo, building)
    run_odoo(
        [
            *odoo_args(odoo, building),
            "-i",
            ",".join(TEMPLATE_MODULES),
            "--stop-after-init",
            "--http-port=0",
        ],
        log,
        f"Building {TEMPLATE_DB}",
    )
    with contextlib.closing(postgres(odoo).cursor()) as cr:
        cr._cnx.autocommit = True
        cr.execute(f'ALTER DATABASE "{building}" RENAME TO "{TEMPLATE_DB}"')
    # The filestore follows its database: installing account wrote attachments (assets,
    # images) under the building name, which the renamed template must find.
    built_store = Path(odoo.tools.config.filestore(building))
    if built_store.exists():
        template_store = Path(odoo.tools.config.filestore(TEMPLATE_DB))
        if template_store.exists():
            shutil.rmtree(template_store)
        built_store.rename(template_store)
    return True


# --------------------------------------------------------------------------------------------
# An Odoo server on 127.0.0.1
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def odoo_server(args: list[str], log: Path, port: int) -> Iterator[subprocess.Popen]:
    """An Odoo server on 127.0.0.1:``port`` for the block, stopped afterwards."""
    import requests  # noqa: PLC0415

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    out = log.open("a", encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "odoo",
            *args,
            "--http-interface=127.0.0.1",
            f"--http-port={port}",
            "--workers=0",
            "--max-cron-threads=0",  # the demo runs the background job itself, visibly
            "--gevent-port=0",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise OdooSetupError(
                    f"The Odoo server stopped at start (exit code {process.returncode}):\n"
                    + "\n".join(log_errors(log)[-15:])
                )
            try:
                health = requests.get(f"http://127.0.0.1:{port}/web/health", timeout=15)
                if health.status_code == 200:
                    break
            except requests.RequestException:
                pass  # not listening yet, or busy loading: ask again
            if time.monotonic() > deadline:
                raise OdooSetupError(f"The Odoo server did not answer on port {port} within 90 s")
            time.sleep(0.3)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        out.close()
