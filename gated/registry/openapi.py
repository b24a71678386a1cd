"""The OpenAPI 3.1 description of the registry's API, served at /api/openapi.json.

Written by hand beside the route table (`gated.registry.api.ROUTES`): a
test checks that every route the application serves under /api/ is
described here with its method, and that the description is valid OpenAPI.
"""

from __future__ import annotations

from gated.registry.api import CHECKINS_LIMIT, CHECKINS_MAX, MAX_BATCH

_TICKET_ID = {"type": "string", "pattern": "^[0-9]{1,20}$",
              "description": "u64 ticket id as a decimal string (a number is accepted on input)"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Bad input: the one-line error names the row and field", 401: "No or unknown token",
            403: "The token's role may not do this", 404: "Not registered", 409: "Refused by the registry's rules",
            413: "Too large", 415: "Not JSON"}
    return {str(code): _json(_ERROR, text[code]) for code in codes}


def openapi() -> dict:
    attendee_in = {
        "type": "object",
        "required": ["ticket_id", "category", "zones"],
        "additionalProperties": False,
        "properties": {
            "ticket_id": {"oneOf": [_TICKET_ID, {"type": "integer", "minimum": 0}]},
            "name": {"type": "string"}, "company": {"type": "string"},
            "category": {"type": "string", "description": "guest, media, staff, exhibitor, vip, ..."},
            "ticket_type": {"type": "string"},
            "zones": {"oneOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1},
                                {"type": "string", "description": "zone names separated by ';'"}]},
            "valid_from": {"type": ["string", "integer"], "description": "ISO 8601 with an offset, or unix seconds"},
            "valid_until": {"type": ["string", "integer"]},
            "validity": {"description": "several windows instead of valid_from/valid_until",
                         "oneOf": [{"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                                               "items": {"type": ["string", "integer"]}}},
                                   {"type": "string", "description": "'from/until;from/until'"}]},
            "max_entries": {"type": ["integer", "string"], "description": "0 or empty: unlimited"},
            "benefits": {"oneOf": [{"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                                   {"type": "string", "description": "'lunch_day1=1;dinner=2'"}]},
            "phone": {"type": "string", "description": "the gates get only its last four digits"},
        },
    }
    attendee = {
        "type": "object",
        "properties": {
            "ticket_id": _TICKET_ID, "name": {"type": "string"}, "company": {"type": "string"},
            "category": {"type": "string"}, "ticket_type": {"type": "string"},
            "zones": {"type": "array", "items": {"type": "string"}},
            "validity": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            "max_entries": {"type": "integer"}, "entries_used": {"type": "integer"},
            "inside": {"type": "array", "items": {"type": "string"}},
            "badge_serial": {"type": "integer"}, "state": {"enum": ["active", "revoked"]},
            "benefits": {"type": "object", "additionalProperties": {"type": "integer"}},
            "phone_last4": {"type": "string"},
            "phone": {"type": "string", "description": "desk and admin roles only"},
        },
    }
    checkin = {
        "type": "object",
        "properties": {
            "cursor": {"type": "integer"}, "event_id": {"type": "string"},
            "at": {"type": "number", "description": "unix seconds, the gate's time of the passage"},
            "gate": {"type": "string"}, "lane": {"type": "string"}, "zone": {"type": ["string", "null"]},
            "direction": {"enum": ["in", "out", None]}, "ticket_id": {"oneOf": [_TICKET_ID, {"type": "null"}]},
            "category": {"type": ["string", "null"]},
            "outcome": {"type": ["string", "null"], "description": "'unknown': counted after a power cut"},
        },
    }
    ticket_param = {"name": "ticket_id", "in": "path", "required": True, "schema": _TICKET_ID}
    change = {"parameters": [ticket_param], "security": [{"bearer": []}, {"mtls": []}], "responses": {
        "200": _json({"$ref": "#/components/schemas/Attendee"}, "The attendee after the change"),
        **_errors(400, 401, 403, 404, 409)}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "gated registry API", "version": "1",
                 "description": "For registration systems: push attendees, revoke, reissue, follow check-ins. "
                                "Every change reaches the gates as deltas, all or nothing, with the token as its actor."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"mtls": []}],
        "paths": {
            "/api/v1/attendees": {"put": {
                "operationId": "upsertAttendees",
                "summary": f"Upsert a batch of at most {MAX_BATCH} attendees, idempotent by ticket id; one bad row refuses the batch",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["attendees"],
                    "properties": {"attendees": {"type": "array", "maxItems": MAX_BATCH, "items": attendee_in}}}}}},
                "responses": {"200": _json({"type": "object", "properties": {
                    k: {"type": "integer"} for k in ("received", "created", "updated", "unchanged")}}, "Stored"),
                    **_errors(400, 401, 403, 409, 413, 415)}}},
            "/api/v1/attendees/{ticket_id}": {"get": {
                "operationId": "getAttendee", "summary": "One attendee", "parameters": [ticket_param],
                "responses": {"200": _json({"$ref": "#/components/schemas/Attendee"}, "The attendee"),
                              **_errors(400, 401, 403, 404)}}},
            "/api/v1/attendees/{ticket_id}/revoke": {"post": {
                "operationId": "revokeAttendee", "summary": "Revoke a ticket (at every gate within a second)", **change}},
            "/api/v1/attendees/{ticket_id}/reissue": {"post": {
                "operationId": "reissueBadge", "summary": "Reprint a badge: the serial goes up, the old badge is superseded",
                **change}},
            "/api/v1/checkins": {"get": {
                "operationId": "listCheckins", "summary": "Check-ins and check-outs stored after a cursor, oldest first",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": CHECKINS_MAX, "default": CHECKINS_LIMIT}}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "checkins": {"type": "array", "items": {"$ref": "#/components/schemas/CheckIn"}},
                    "next": {"type": "integer", "description": "the cursor to send as `after` next time"}}}, "A page"),
                    **_errors(400, 401, 403)}}},
            "/api/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This description",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
                              **_errors(401)}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "gated registry tokens add NAME --role desk --db FILE"},
                                "mtls": {"type": "mutualTLS",
                                         "description": "a client certificate of the venue CA with CN api:NAME "
                                                        "(gated certs make --api-clients NAME), NAME an integration "
                                                        "made with gated registry tokens add; served by "
                                                        "gated registry serve with --tls-*"}},
            "schemas": {
                "Attendee": attendee, "CheckIn": checkin,
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "row": {"type": "integer"}, "field": {"type": "string"}}},
            },
        },
    }
