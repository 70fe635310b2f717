"""The generated part of ``docs/protocol.md``: message schemas and actions per device kind.

``sesame protocol docs`` rewrites the section between the markers, and the readers' test
vectors (``docs/test-vectors/credentials.json``, ``sesame.keys.vectors``); a test fails
when the document or the vectors and the code disagree, so a device maker can trust both.
"""

from __future__ import annotations

import json
from pathlib import Path

from sesame.devices import protocol
from sesame.devices.drivers import driver_for
from sesame.models import DeviceKind

BEGIN = "<!-- BEGIN GENERATED: do not edit; run `sesame protocol docs` -->"
END = "<!-- END GENERATED -->"

MESSAGES: list[tuple[protocol.Channel, type[protocol.Message]]] = [
    (channel, model) for channel, model in protocol.MESSAGES_BY_CHANNEL.items()
]


def _schema(model: type[protocol.Message]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False, sort_keys=True)


def render() -> str:
    parts = [BEGIN, "", "### Messages", ""]
    parts.append("| channel | direction | QoS | retained | message |")
    parts.append("|---|---|---|---|---|")
    for channel, model in MESSAGES:
        direction = (
            "device → gateway" if channel in protocol.DEVICE_PUBLISHES else "gateway → device"
        )
        retained = "yes" if channel in protocol.RETAINED else "no"
        parts.append(
            f"| `{channel.value}` | {direction} | {protocol.QOS[channel]} | "
            f"{retained} | `{model.__name__}` |"
        )
    parts.append("")
    for channel, model in MESSAGES:
        doc = " ".join((model.__doc__ or "").split())
        parts += [
            f"#### `{model.__name__}` (on `{channel.value}`)",
            "",
            doc,
            "",
            "```json",
            _schema(model),
            "```",
            "",
        ]
    parts += [
        "### Actions by device kind",
        "",
        "The `action` and `params` of a `Command`, by the kind the device was "
        "provisioned as. Every kind also answers `ping` (no params; section 4).",
        "",
    ]
    for kind in DeviceKind:
        driver = driver_for(kind)
        parts += [f"#### `{kind.value}`", ""]
        for action, spec in sorted(driver.actions.items()):
            if action == "ping":
                continue
            schema = json.dumps(
                spec.params.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False
            )
            parts += [
                f"- `{action}` — default time-to-live {spec.default_ttl_seconds} s "
                f"(at most {spec.max_ttl_seconds} s); params:",
                "",
                "```json",
                schema,
                "```",
                "",
            ]
    parts += [
        "### Event types",
        "",
        ", ".join(f"`{event.value}`" for event in protocol.EventType),
        "",
        "### Result error codes",
        "",
        ", ".join(f"`{code.value}`" for code in protocol.ErrorCode),
        "",
        END,
    ]
    return "\n".join(parts)


def _vectors_directory(path: Path) -> Path:
    """The readers' test vectors live next to the protocol document."""
    return path.parent / "test-vectors"


def update(path: Path) -> bool:
    """Rewrite the generated section of ``path`` and the readers' test vectors beside
    it; True if either changed."""
    from sesame.keys import vectors  # keys builds on devices: imported only here

    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + render() + text[end:]
    changed = vectors.update(_vectors_directory(path))
    if updated == text:
        return changed
    path.write_text(updated)
    return True


def is_current(path: Path) -> bool:
    from sesame.keys import vectors

    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end] == render() and vectors.is_current(_vectors_directory(path))
