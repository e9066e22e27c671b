"""The service's OpenAPI 3.0 document, and a plain HTML page that renders it (no CDN, no
script: the docs work on an isolated machine).

Record schemas are derived from the model's dataclasses, so the document cannot drift from
what the service actually sends.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import types
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..model import (
    Account,
    Connection,
    ConnectResult,
    ConnectSession,
    Institution,
    Transaction,
    WebhookEvent,
)
from ..signing import (
    CLIENT_HEADER,
    COMPANY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_VERSION,
    TIMESTAMP_HEADER,
)

_RECORDS = (Institution, Connection, Account, Transaction, ConnectSession, ConnectResult)


def _schema_of(tp: Any) -> dict[str, Any]:  # noqa: PLR0911 - one branch per type
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return {**_schema_of(inner[0]), "nullable": True}
    if origin in (tuple, list):
        return {"type": "array", "items": _schema_of(get_args(tp)[0])}
    if origin in (Mapping, dict) or tp is Any:
        return {"type": "object", "additionalProperties": True}
    if tp is Decimal:
        return {"type": "string", "format": "decimal", "example": "-12.30"}
    if tp is datetime:
        return {"type": "string", "format": "date-time"}
    if tp is date:
        return {"type": "string", "format": "date"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp):
        return {"$ref": f"#/components/schemas/{tp.__name__}"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    return {"type": "string"}


def _record_schema(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    schema: dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or "").strip().splitlines()[0],
        "properties": {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(cls)},
    }
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json_content(schema)
    return answer


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "429": {"$ref": "#/components/responses/TooManyRequests"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}


def _list_of(key: str, item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": _ref(item)}},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": _json_content(
            {"type": "object", "required": required, "properties": properties}
        ),
    }


def _op(
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    tag: str,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    company: bool = True,
    signed: bool = True,
    not_found: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "tags": [tag],
        "responses": {
            **responses,
            **(_ERRORS if signed else {}),
            **(_NOT_FOUND if not_found else {}),
        },
    }
    params = list(parameters or [])
    if company:
        params.insert(0, {"$ref": "#/components/parameters/Company"})
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = body
    if signed:
        operation["security"] = [{"client": [], "timestamp": [], "nonce": [], "signature": []}]
    else:
        operation["security"] = []
    return operation


def build_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the service's HTTP API."""
    connection_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The aggregator's connection id",
    }
    account_id = {**connection_id, "description": "The aggregator's account id"}
    locale = _query("locale", {"type": "string", "default": "en"}, "Language of messages")
    session_body = {
        "callback_url": {"type": "string", "format": "uri"},
        "state": {"type": "string", "description": "Opaque; comes back in the callback"},
        "locale": {"type": "string", "default": "en"},
    }
    schemas: dict[str, Any] = {cls.__name__: _record_schema(cls) for cls in _RECORDS}
    schemas["Event"] = {
        **_record_schema(WebhookEvent),
        "description": "An aggregator event routed to this tenant",
    }
    schemas["Event"]["properties"].update(
        {
            "id": {
                "type": "integer",
                "description": "The service's id of the event: unique, the same in every retry "
                "and poll, and its position in the tenant's event stream",
            },
            "company": {"type": "string", "description": "The tenant company it concerns"},
            "received_at": {
                "type": "integer",
                "description": "When the service received it (Unix seconds)",
            },
        }
    )
    schemas["TransactionPage"] = {
        "type": "object",
        "required": ["transactions", "last"],
        "properties": {
            "transactions": {"type": "array", "items": _ref("Transaction")},
            "cursor": {
                "type": "string",
                "nullable": True,
                "description": "Resume point: store it with this page's lines",
            },
            "last": {"type": "boolean"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message", "request_id"],
        "properties": {
            "error": {"type": "string", "example": "signature"},
            "message": {"type": "string"},
            "request_id": {"type": "string"},
            "code": {"type": "string", "description": "The aggregator's own code, when any"},
            "reason": {
                "type": "string",
                "description": "With action_required: what the bank login's owner must do",
            },
        },
    }

    def error_response(description: str) -> dict[str, Any]:
        return {"description": description, "content": _json_content(_ref("Error"))}

    paths: dict[str, Any] = {
        "/health": {
            "get": _op(
                "Health check",
                "Answers 200 while the service and its database work. Not signed.",
                {"200": _ok("Healthy", {"type": "object"})},
                tag="service",
                company=False,
                signed=False,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                "The OpenAPI description of the service.",
                {"200": _ok("OpenAPI 3 document", {"type": "object"})},
                tag="service",
                company=False,
                signed=False,
            )
        },
        "/webhooks/{kind}": {
            "post": {
                "summary": "Aggregator webhook intake",
                "description": (
                    "Public endpoint given to the aggregator. The vendor's signature is checked "
                    "on the raw body; each event is stored once per event id and routed to the "
                    "tenant that owns its connection. Answered at once."
                ),
                "tags": ["webhooks"],
                "security": [],
                "parameters": [
                    {
                        "name": "kind",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["sandbox", "bridgeapi", "linxo"]},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "202": _ok(
                        "Accepted",
                        {
                            "type": "object",
                            "properties": {
                                "received": {"type": "integer"},
                                "new": {"type": "integer"},
                            },
                        },
                    ),
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                },
            }
        },
        "/v1/institutions": {
            "get": _op(
                "Search banks",
                "Banks of the operator's aggregator, most requested first.",
                {"200": _ok("Banks", _list_of("institutions", "Institution"))},
                tag="banks",
                parameters=[
                    _query("search", {"type": "string"}, "Case and accent insensitive"),
                    _query("country", {"type": "string"}, "ISO 3166 code"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "At most"),
                ],
            )
        },
        "/v1/connect-sessions": {
            "post": _op(
                "Start connecting a bank",
                "Opens the aggregator's hosted page for a new connection of this company.",
                {"201": _ok("Hosted page", _ref("ConnectSession"))},
                tag="connections",
                body=_body(
                    {
                        **session_body,
                        "institution_id": {"type": "string", "nullable": True},
                        "user_email": {"type": "string", "nullable": True},
                    },
                    ["callback_url", "state"],
                ),
            )
        },
        "/v1/connect/complete": {
            "post": _op(
                "Complete a connect",
                "Checks the hosted page's return parameters; a successful connection becomes "
                "this company's.",
                {"200": _ok("Outcome", _ref("ConnectResult"))},
                tag="connections",
                body=_body(
                    {"params": {"type": "object", "additionalProperties": {"type": "string"}}},
                    ["params"],
                ),
                not_found=True,
            )
        },
        "/v1/connections": {
            "get": _op(
                "List connections",
                "Every connection of this company.",
                {"200": _ok("Connections", _list_of("connections", "Connection"))},
                tag="connections",
                parameters=[locale],
            )
        },
        "/v1/connections/{id}": {
            "get": _op(
                "Read a connection",
                "Its state and the aggregator's message.",
                {"200": _ok("Connection", _ref("Connection"))},
                tag="connections",
                parameters=[connection_id, locale],
                not_found=True,
            ),
            "delete": _op(
                "Delete a connection",
                "Revokes it at the aggregator. An unknown id is not an error.",
                {"204": _ok("Deleted")},
                tag="connections",
                parameters=[connection_id],
            ),
        },
        "/v1/connections/{id}/reconnect-sessions": {
            "post": _op(
                "Start a reconnect",
                "Opens the hosted page on an existing connection (strong authentication, "
                "new credentials).",
                {"201": _ok("Hosted page", _ref("ConnectSession"))},
                tag="connections",
                parameters=[connection_id],
                body=_body(session_body, ["callback_url", "state"]),
                not_found=True,
            )
        },
        "/v1/connections/{id}/refresh": {
            "post": _op(
                "Refresh a connection",
                "Asks the aggregator to read the bank now.",
                {"200": _ok("Connection", _ref("Connection"))},
                tag="connections",
                parameters=[connection_id],
                not_found=True,
            )
        },
        "/v1/accounts": {
            "get": _op(
                "List accounts",
                "Accounts of one connection, or of all connections of this company.",
                {"200": _ok("Accounts", _list_of("accounts", "Account"))},
                tag="accounts",
                parameters=[_query("connection_id", {"type": "string"}, "Only this connection")],
                not_found=True,
            )
        },
        "/v1/accounts/{id}/transactions": {
            "get": _op(
                "One page of operations",
                "Without cursor, the date window's first page; with the cursor of a page, "
                "the next one. Read until `last` is true.",
                {"200": _ok("Page", _ref("TransactionPage"))},
                tag="accounts",
                parameters=[
                    account_id,
                    _query("cursor", {"type": "string"}, "From the previous page"),
                    _query("date_from", {"type": "string", "format": "date"}, "Window start"),
                    _query("date_to", {"type": "string", "format": "date"}, "Window end"),
                ],
                not_found=True,
            )
        },
        "/v1/user": {
            "delete": _op(
                "Delete this company's aggregator user",
                "Everything the aggregator holds for this company is deleted.",
                {"204": _ok("Deleted")},
                tag="accounts",
            )
        },
        "/v1/events": {
            "get": _op(
                "Poll events",
                "Aggregator events routed to this tenant, after the id given.",
                {
                    "200": _ok(
                        "Events",
                        {
                            "type": "object",
                            "required": ["events", "last_id"],
                            "properties": {
                                "events": {"type": "array", "items": _ref("Event")},
                                "last_id": {"type": "integer"},
                            },
                        },
                    )
                },
                tag="events",
                company=False,
                parameters=[
                    _query("after", {"type": "integer", "minimum": 0}, "Last id already handled"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "At most"),
                ],
            )
        },
        "/v1/callback": {
            "put": _op(
                "Register the callback URL",
                "The service posts each new event there as "
                '`{"delivery_id": ..., "sent_at": ..., "events": [...]}`, signed with the '
                "tenant secret like requests are (plus an `X-BSB-Path` header naming the signed "
                "path), and retries in the background. `delivery_id` (unique per post, retries "
                "included) and `sent_at` (Unix seconds) equal the signature's nonce and "
                "timestamp: remember each delivery id for the signature's 5-minute window to "
                "refuse a replayed post. Only https URLs to public addresses are accepted.",
                {"204": _ok("Registered")},
                tag="events",
                company=False,
                body=_body({"url": {"type": "string", "format": "uri"}}, ["url"]),
            ),
            "delete": _op(
                "Remove the callback URL",
                "Events are then only polled.",
                {"204": _ok("Removed")},
                tag="events",
                company=False,
            ),
        },
    }
    header_scheme = {"type": "apiKey", "in": "header"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "bank_sync_bridge service",
            "version": version,
            "description": (
                "Multi-tenant bridge between Odoo databases and one operator's bank data "
                "aggregator. Every /v1 call is signed by the tenant: "
                f"`{SIGNATURE_HEADER}` is `{SIGNATURE_VERSION}=` followed by the hex "
                "HMAC-SHA256, keyed with the tenant secret, of the lines `bsb-request-v2`, "
                "timestamp, nonce, method, path with query, the company header's value (empty "
                "when absent) and the hex SHA-256 of the body, joined by newlines; "
                f"`{TIMESTAMP_HEADER}` is in Unix seconds and must be within 5 minutes; "
                f"`{NONCE_HEADER}` is never reused. `{COMPANY_HEADER}` names the tenant's "
                "company: each company is its own aggregator user."
            ),
            "license": {"name": "LGPL-3.0-only"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": name}
            for name in ("service", "webhooks", "banks", "connections", "accounts", "events")
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "Company": {
                    "name": COMPANY_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                    "description": "The tenant's company this call acts for",
                }
            },
            "responses": {
                "BadRequest": error_response("Malformed request"),
                "Unauthorized": error_response(
                    "Unsigned, badly signed, replayed, or from an unknown or revoked client"
                ),
                "NotFound": error_response("Not this company's, or does not exist"),
                "TooManyRequests": {
                    **error_response("Rate limited; see Retry-After"),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                },
                "Unavailable": error_response("The aggregator or the bank failed; retry later"),
            },
            "securitySchemes": {
                "client": {**header_scheme, "name": CLIENT_HEADER},
                "timestamp": {**header_scheme, "name": TIMESTAMP_HEADER},
                "nonce": {**header_scheme, "name": NONCE_HEADER},
                "signature": {**header_scheme, "name": SIGNATURE_HEADER},
            },
        },
    }


def render_docs(spec: Mapping[str, Any]) -> str:
    """A readable, self-contained HTML page of ``spec`` (no script, no external asset)."""
    esc = html.escape
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(spec['info']['title'])}</title>",
        (
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
            "code,pre{background:#f4f4f4;padding:0 .2em}h3{margin-bottom:.2em}"
            ".m{display:inline-block;min-width:4.5em;font-weight:bold}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style>"
        ),
        "</head><body>",
        f"<h1>{esc(spec['info']['title'])} <small>{esc(spec['info']['version'])}</small></h1>",
        f"<p>{esc(spec['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>",
        "<h2>Endpoints</h2>",
    ]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            out.append(
                f"<h3><span class='m'>{esc(method.upper())}</span><code>{esc(path)}</code></h3>"
            )
            out.append(f"<p><b>{esc(op['summary'])}</b>. {esc(op.get('description', ''))}</p>")
            if op.get("security"):
                out.append("<p><i>Signed by the tenant.</i></p>")
            params = [p for p in op.get("parameters", []) if "name" in p]
            if any("$ref" in p for p in op.get("parameters", [])):
                out.append(f"<p>Header <code>{esc(COMPANY_HEADER)}</code> required.</p>")
            if params:
                out.append("<table><tr><th>Parameter</th><th>In</th><th>Description</th></tr>")
                for p in params:
                    out.append(
                        f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
                        f"<td>{esc(p.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            codes = ", ".join(esc(code) for code in op["responses"])
            out.append(f"<p>Answers: {codes}</p>")
    out.append("<h2>Records</h2>")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f"<h3>{esc(name)}</h3><p>{esc(schema.get('description', ''))}</p><ul>")
        for prop, prop_schema in schema.get("properties", {}).items():
            kind = prop_schema.get("$ref", "").rsplit("/", 1)[-1] or prop_schema.get("type", "")
            out.append(f"<li><code>{esc(prop)}</code>: {esc(kind)}</li>")
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)
