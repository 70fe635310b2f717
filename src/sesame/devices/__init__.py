"""Devices: registry and provisioning, the MQTT gateway, action attempts, presence, events."""
