"""gated: the venue gate daemon.

The pure decision core lives in `gated.validation`; hardware adapters in
`gated.drivers`; the registry uplink and admin service in `gated.rpc`.
"""

__version__ = "0.1.0"
