"""The engine's exception hierarchy: one base, so callers can catch everything we raise.

Expected conditions on the packet path (EAGAIN, a full ring, a malformed frame) are not
exceptions: they are return values plus counters (see engine/stats.py).
"""


class EngineError(Exception):
    """Base of every error the engine raises on purpose. The message is meant for the user."""


class ConfigError(EngineError):
    """A setting is invalid; the message names the setting and what is allowed."""
