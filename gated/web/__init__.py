"""The one web stack of every page gated serves (the operator screen of a
handheld lane today; the registry's staff pages next): asyncio aiohttp,
server-sent events, every script, style and font served from this package.

Venues have no internet: nothing is loaded from a CDN. Files under
`gated/web/static/` are served at `/static/` by every application
`make_app()` builds; a page adds its own routes to the application.

    from gated.web import WebServer, WebSettings, make_app, Broadcast

    settings = WebSettings(host="127.0.0.1", port=8081, pin_hash=None)
    app = make_app(settings)                  # /static/, /signin, /signout, the guards below
    events = Broadcast()
    app.router.add_get("/", page)
    app.router.add_get("/events", lambda request: events.respond(request, initial=...))
    server = WebServer(app, settings)
    await server.start()                      # WebError, one line, if refused
    events.publish("decision", {...})         # every open page receives it
    await server.stop()

The rules every page keeps (`gated.web.security`, checked by `make_app`,
`WebServer.start` and, with file and line, by the config loader):

- **Listen**: loopback by default (the unit's own kiosk browser). Any other
  address only with TLS (`tls_cert`, `tls_key`; `gated certs make` makes
  them) AND a sign-in (`pin_hash`); refused at start otherwise, one line.
- **Sign-in**: a PIN per unit, stored in the config as an scrypt hash
  (`gated web hash-pin`), compared in constant time, checked off the event
  loop; 5 wrong PINs per client per minute, then a wait. A session is a
  random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS),
  kept server-side only as its SHA-256 and expiring `session_minutes` after
  sign-in. With a `pin_hash`, every path but `/signin` and `/static/` needs
  a session: pages redirect to `/signin`, `/api/*` and `/events` answer 401.
- **Accounts** instead of a PIN (the registry's pages): `make_app(settings,
  accounts=SignIn(fields, check, bearer))`; the session then carries who
  signed in (`request[PRINCIPAL]`), and `bearer(token)` admits an API call
  with `Authorization: Bearer TOKEN` without a session or an Origin.
- **POSTs**: refused (403) unless their Origin (or Referer) is this server's
  own scheme and host: another site open in the same browser cannot act.
- **Headers**: a Content-Security-Policy allowing only this server's own
  scripts and styles (no inline script), no framing, no caching.

Modules: `server` (the application, TLS, listening), `security` (listen
rule, PIN hashes, sessions, origin check; standard library only), `sse`
(server-sent events).
"""

from gated.web.security import hash_pin, is_loopback, listen_problem, verify_pin

# aiohttp loads only when a page is served: the config loader reads the listen rule from
# `gated.web.security` without it.
_LAZY = {"PRINCIPAL": "server", "SignIn": "server", "STATIC_DIR": "server", "WebError": "server", "WebServer": "server", "WebSettings": "server",
         "make_app": "server", "Broadcast": "sse"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"gated.web.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gated.web' has no attribute {name!r}")


__all__ = [
    "PRINCIPAL", "STATIC_DIR", "Broadcast", "SignIn", "WebError", "WebServer", "WebSettings", "hash_pin", "is_loopback",
    "listen_problem", "make_app", "verify_pin",
]
