"""The reference registry: a real service a small or medium event runs on.

- `store`    the SQLite database: attendees, changes, events (once each), conflicts, keys
- `server`   the gRPC `Registry` service gates connect to (mTLS), with its in-memory mirror
- `importer` attendee CSV files, all or nothing
- `report`   entries and exits per hour per gate and lane, attendance, conflicts

Gates never import this package: they speak the contract (proto/gated/v1,
docs/contract.md).
"""
