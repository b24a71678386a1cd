"""`gated certs make`: a CA, the registry's certificate and one per gate, for mTLS at a venue."""

from __future__ import annotations

from gated.cli.args import EXIT_OK, UsageError, add_group


def cmd_certs_make(args) -> int:
    from gated.rpc.certs import make_venue_certs

    gate_ids = [g.strip() for g in args.gate_ids.split(",") if g.strip()]
    if not gate_ids:
        raise UsageError("gated certs make: --gate-ids needs at least one gate id")
    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    api_clients = [a.strip() for a in (args.api_clients or "").split(",") if a.strip()]
    try:
        venue = make_venue_certs(args.out, gate_ids, hosts, api_clients)
    except ValueError as exc:
        raise UsageError(f"gated certs make: {exc}") from None
    extra = f" and {len(api_clients)} API client certificate(s) (api-NAME.pem)" if api_clients else ""
    print(f"wrote {venue.ca}, {venue.registry.cert}, {len(venue.gates)} gate certificate(s){extra} in {args.out}")
    return EXIT_OK


def add_parser(subparsers) -> None:
    certs = add_group(subparsers, "certs", help="TLS certificates for a venue")
    p = certs.add_parser("make", help="a CA, the registry's certificate and one per gate")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--gate-ids", required=True, metavar="A,B,...")
    p.add_argument("--hosts", metavar="H1,H2", help="extra registry host names or addresses")
    p.add_argument("--api-clients", metavar="N1,N2",
                   help="registration systems: a client certificate each (CN api:NAME) for the registry's HTTP API")
    p.set_defaults(func=cmd_certs_make)
