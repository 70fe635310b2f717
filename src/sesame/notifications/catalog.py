"""What a notification says: categories, which of them are critical, and the Korean and
English templates, chosen by the recipient's locale.

Templates are plain ``str.format`` strings over a few named fields; a field the event
lacks renders as an empty string rather than failing a delivery.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

DEFAULT_LOCALE = "ko"
LOCALES = ("ko", "en")


@dataclass(frozen=True)
class Category:
    name: str
    critical: bool  # ignores preferences: the person must hear of it
    description: str


CATEGORIES = {
    c.name: c
    for c in (
        Category("doorbell", False, "Someone rang your doorbell."),
        Category("keys", False, "A key was shared with you."),
        Category(
            "security", True, "Your access changed: a key revoked; a device commanded by others."
        ),
        Category("guest_passes", False, "A guest pass you issued was used."),
        Category("devices", False, "Devices at your sites: offline, low battery, clock drift."),
        Category("operations", True, "Platform alerts: error rates, relay lag."),
        Category("announcements", False, "Messages from your building's management."),
        Category("confirmation", True, "The code that confirms an address you registered."),
        Category("invitation", True, "You were added as a resident: how to sign in (SMS)."),
    )
}

# template -> locale -> (title, body)
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "doorbell.rang": {
        "ko": ("초인종", "{place}에서 초인종이 울렸습니다."),
        "en": ("Doorbell", "Someone is at {place}."),
    },
    "key.shared": {
        "ko": ("열쇠가 공유되었습니다", "{site} 출입 열쇠를 받았습니다."),
        "en": ("A key was shared with you", "You can now enter {site}."),
    },
    "key.revoked": {
        "ko": ("열쇠가 회수되었습니다", "{site} 출입 열쇠가 더 이상 유효하지 않습니다."),
        "en": ("Your key was revoked", "Your key to {site} no longer opens its doors."),
    },
    "guest_pass.used": {
        "ko": ("방문객 출입", "발급하신 방문 출입증이 {place}에서 사용되었습니다."),
        "en": ("Guest pass used", "The guest pass you issued was used at {place}."),
    },
    "device.offline": {
        "ko": ("기기 연결 끊김", "{site}의 {device}이(가) 오프라인입니다."),
        "en": ("Device offline", "{device} at {site} is offline."),
    },
    "device.flapping": {
        "ko": (
            "기기 연결 불안정",
            "{site}의 {device}이(가) 오프라인입니다. 지난 알림 이후 {flaps}번 연결이 끊겼습니다.",
        ),
        "en": (
            "Device offline, connection unstable",
            "{device} at {site} is offline; it dropped off {flaps} times since the last alert.",
        ),
    },
    "device.low_battery": {
        "ko": ("배터리 부족", "{site}의 {device} 배터리가 부족합니다 ({level}%)."),
        "en": ("Low battery", "{device} at {site} is low on battery ({level}%)."),
    },
    "device.clock_drift": {
        "ko": ("기기 시계 오차", "{site}의 {device} 시계가 {offset}초 어긋났습니다."),
        "en": ("Device clock drift", "The clock of {device} at {site} is off by {offset} s."),
    },
    "device.unexpected_result": {
        "ko": (
            "기기 보안 경고",
            "{site}의 {device}이(가) 플랫폼이 보내지 않은 명령의 결과를 보고했습니다.",
        ),
        "en": (
            "Device security alert",
            "{device} at {site} reported the result of a command the platform never sent.",
        ),
    },
    "destination.confirm": {
        "ko": (
            "Sesame 알림 주소 확인",
            "확인 코드: {code}\n\n{minutes}분 안에 앱에 입력하면 이 주소로 알림을 받습니다. "
            "요청하지 않았다면 이 메일을 무시하세요.",
        ),
        "en": (
            "Confirm your Sesame notification address",
            "Your code: {code}\n\nEnter it in the app within {minutes} minutes to receive "
            "notifications here. If you did not ask for this, ignore this message.",
        ),
    },
    "resident.invited": {
        "ko": (
            "Sesame 초대",
            "[Sesame] {site} 입주민으로 등록되었습니다. Sesame 앱에 이 전화번호를 입력하고 "
            "문자로 받은 인증번호를 넣으면 로그인됩니다.",
        ),
        "en": (
            "Sesame invitation",
            "[Sesame] You were added as a resident of {site}. To sign in, enter this phone "
            "number in the Sesame app, then the code we text you.",
        ),
    },
    "ops.alert": {
        "ko": ("운영 경보: {name}", "{message}"),
        "en": ("Operations alert: {name}", "{message}"),
    },
}


# Text messages sent straight to a person's phone: template -> locale -> text.
SMS: dict[str, dict[str, str]] = {
    "sign_in.code": {
        "ko": "[Sesame] 인증번호 {code} ({minutes}분 안에 입력하세요)",
        "en": "[Sesame] Your sign-in code is {code} (enter it within {minutes} min)",
    },
}


class _Lenient(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        value = kwargs.get(key, "") if isinstance(key, str) else ""
        return "" if value is None else value


_FORMATTER = _Lenient()


def locale_of(preferred: str | None) -> str:
    """``ko-KR`` → ``ko``; anything we have no templates for → the default."""
    language = (preferred or "").split("-")[0].split("_")[0].lower()
    return language if language in LOCALES else DEFAULT_LOCALE


def render(template: str, locale: str, fields: dict[str, Any]) -> tuple[str, str]:
    title, body = TEMPLATES[template][locale_of(locale)]
    return _FORMATTER.format(title, **fields), _FORMATTER.format(body, **fields)


def campaign_text(content: dict[str, Any], locale: str) -> tuple[str, str]:
    """A campaign's title and body in the recipient's language, else in the first given."""
    chosen = content.get(locale_of(locale)) or next(iter(content.values()))
    return str(chosen["title"]), str(chosen["body"])


def sms_text(template: str, locale: str | None, fields: dict[str, Any]) -> str:
    """A text message in the person's language (the default one for a locale we lack)."""
    return _FORMATTER.format(SMS[template][locale_of(locale)], **fields)
