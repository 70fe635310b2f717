"""Device drivers: what each kind of device can do and how a command is phrased for it.

``driver_for(kind)`` returns the driver of a kind. Every driver derives from
``DeviceDriver`` (``base.py``); the drivers here speak the native Sesame protocol
(``native.py``). A vendor or protocol with its own wire format (a Z-Wave controller, an
elevator maker's server) gets a module of its own with drivers that override the hooks.
"""

from sesame.devices.drivers.base import ActionSpec, DeviceDriver, Feature
from sesame.devices.drivers.native import driver_for

__all__ = ["ActionSpec", "DeviceDriver", "Feature", "driver_for"]
