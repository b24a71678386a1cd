"""The gate at run time: `daemon` (wiring and lifecycle), `lane` (one lane's
scan path, given the few services it needs), `passage` (which admission a
passage belongs to), `outcomes` (admissions whose outcome a power cut lost),
`control` (the admin actions), `state` (what survives a reboot and its
saving) and `sdnotify` (systemd). The clock (`gated.clock`) and the usage
replay (`gated.usage`) sit below, shared with the uplink."""
