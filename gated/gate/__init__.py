"""The gate at run time: `daemon` (wiring and lifecycle), `lane` (one lane's
scan path), `passage` (which admission a passage belongs to), `state` (what
survives a reboot), `clock` (the registry offset) and `sdnotify` (systemd)."""
