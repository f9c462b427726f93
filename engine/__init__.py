"""A multiprocess, sharded userspace packet engine for TUN devices; its first job is the
IP mirror (see README.md)."""
from .config import Config
from .errors import ConfigError, EngineError
from .packet import Mirror, mirror_batch, mirror_frame
from .tun import Device, TunError, open_device

__all__ = ["Config", "ConfigError", "EngineError", "Mirror", "mirror_batch", "mirror_frame",
           "Device", "TunError", "open_device"]
__version__ = "0.1.0"
