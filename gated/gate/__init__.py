"""The gate: lanes, passage windows, the daemon's wiring."""
