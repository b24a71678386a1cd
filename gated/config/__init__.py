"""Loading and checking the daemon's TOML config: all of it valid, or nothing.

The daemon refuses to start on a bad config and never runs half-configured,
so `load_config()` either returns a complete, frozen `Config` or raises one
`ConfigError` whose message is a single line a technician can act on:

    config/example.toml:42: lane[1].relay.pin: expected an integer GPIO pin 0..27, got "17"

Rules kept here (Klipper's configfile is the model):

- every value is read through a typed getter with bounds (`getters.Section`);
  unknown keys and tables are refused, naming the allowed ones;
- each GPIO pin and each device (serial port, input device, camera) is used
  once in the whole file; a clash names both places;
- a lane has at least one input (scanner, keypad or camera) and the outputs
  its mode needs: a turnstile a relay, a handheld no relay but a light or a
  buzzer to signal the operator; keypad entry is attended only;
- relative paths resolve against the config file's directory; files are
  checked for existence only with `check_files=True` (the daemon does, a
  technician checking a config on a laptop need not);
- `[[lane]]` indexes in messages count from 0, like `Config.lanes`;
- values and keys nest at most `MAX_NESTING` deep (arrays, inline tables,
  dotted keys): tomllib recurses into nested values and would end a deeper
  file with a RecursionError, so the depth is checked on the text first.

tomllib gives no line numbers, so `locator.Locator` re-reads the source text to map
each table and key to the line that defines it.

The package: `schema` (the frozen result), `locator` (file and line of
every table and key), `getters` (typed, bounded reads), `load` (one reader
per table, and `load_config`).
"""

from gated.config.load import describe, load_config
from gated.config.schema import (
    AdminSection,
    BuzzerConfig,
    CameraConfig,
    Config,
    EmergencySection,
    GateSection,
    IoModuleConfig,
    JournalSection,
    LaneConfig,
    LightConfig,
    PassageConfig,
    PolicySection,
    PrinterConfig,
    RelayConfig,
    ScannerConfig,
    ScreenConfig,
    UplinkSection,
)

__all__ = [
    "AdminSection",
    "BuzzerConfig",
    "CameraConfig",
    "Config",
    "EmergencySection",
    "GateSection",
    "IoModuleConfig",
    "JournalSection",
    "LaneConfig",
    "LightConfig",
    "PassageConfig",
    "PolicySection",
    "PrinterConfig",
    "RelayConfig",
    "ScannerConfig",
    "ScreenConfig",
    "UplinkSection",
    "describe",
    "load_config",
]
