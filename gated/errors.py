"""Every error gated raises on purpose, in one flat module (gpiozero's style).

Each subclass is also the matching builtin, so callers that only know
`ValueError` still catch it. Messages are written for the technician who will
read them: they name the file, key or line and say what is expected. They
never contain key material.
"""


class GatedError(Exception):
    """Root of all errors gated raises on purpose."""


class KeyFileError(GatedError, ValueError):
    """The key file is unreadable, malformed or too widely readable."""


class KeyRingError(GatedError, ValueError):
    """A key ring operation was refused (bad kid, bad key length)."""


class SnapshotError(GatedError, ValueError):
    """An entitlement snapshot is malformed; the cache was left unchanged."""


class DeltaRefused(GatedError, ValueError):
    """An entitlement delta was refused whole; the cache was left unchanged."""


class StateError(GatedError, OSError):
    """The state directory (persisted cache and key ring) cannot be used."""


class ConfigError(GatedError, ValueError):
    """The configuration file is invalid; the message names file, key and line."""


class JournalError(GatedError, RuntimeError):
    """The journal could not be opened or written."""


class DriverError(GatedError, RuntimeError):
    """A hardware driver could not be opened or configured."""


class UsageError(GatedError):
    """Bad command-line use; printed as one line, exit status 2."""


class UplinkError(GatedError, RuntimeError):
    """The uplink cannot run as configured (unreadable TLS files)."""


class MalformedUpdate(DeltaRefused):
    """An update from the registry that breaks the contract; nothing of it was applied."""


class AdminAddressError(GatedError, ValueError):
    """The admin service may only listen on a unix socket or a loopback address."""


class AdminError(GatedError, RuntimeError):
    """The admin service could not be started or reached."""


class RegistryError(GatedError, ValueError):
    """A registry command was refused (unknown ticket, bad key, unreadable database)."""


class EventConflict(RegistryError):
    """A gate sent a (gate, epoch, seq) the registry holds with other content."""

    def __init__(self, gate_id: str, epoch: int, seq: int, what: str) -> None:
        super().__init__(f"gate {gate_id!r} epoch {epoch:#018x} seq {seq}: already stored with another {what}")
        self.gate_id, self.epoch, self.seq = gate_id, epoch, seq


class AttendeeFileError(GatedError, ValueError):
    """A bad attendee file; the message is `FILE:LINE: column: problem`."""
class BadgeError(GatedError, ValueError):
    """A badge cannot be rendered as asked (size, colour, photo, font, format)."""


class PrinterError(GatedError, OSError):
    """A badge could not be sent to its printer; the message names the printer."""
