"""The simulator's defaults, shared by its command line (hw_sim.command) and its run (hw_sim.sim, hw_sim.traffic)."""

DEFAULT_RUN_DIR = "run/sim"
DEFAULT_RATE_PER_MIN = 30.0
