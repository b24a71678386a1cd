"""The reference registry: a real service a small or medium event runs on.

- `store`    the SQLite database: attendees, changes, events (once each), conflicts, keys
- `server`   the gRPC `Registry` service gates connect to (mTLS), with its in-memory mirror
- `importer` attendee CSV files, all or nothing
- `report`   entries and exits per hour per gate and lane, attendance, conflicts
- `pages`    the desk pages (attendees, walk-ins, badges, reprint, revoke) and the accounts page, with roles
- `http`     the one application of the pages and the API (`RegistryWeb`), signed in with `accounts`
- `dashboard` the live dashboard (SSE, Chart.js from static/vendor/) and its CSV and PDF exports
- `dashdata` the figures the dashboard and the desk read, kept by SQLite triggers

Gates never import this package: they speak the contract (proto/gated/v1,
docs/contract.md).
"""
