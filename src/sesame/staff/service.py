"""Rules for staff accounts.

- Only platform administrators create or promote platform administrators.
- Partner staff belong to exactly one partner; site managers and installers also to at
  least one site of that partner, and see nothing outside those sites.
- A new password or a deactivation ends every session of the account at once (but
  the one in which someone changes their own password).
- Nobody demotes, deactivates or deletes themselves (a partner must not lock itself out).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sesame.api.crud import CrudService
from sesame.auth.principal import Group
from sesame.auth.repository import SessionRepository
from sesame.kit.errors import FieldError, Forbidden, ValidationFailed
from sesame.models import StaffAccount, StaffRole, StaffSiteScope
from sesame.sites.repository import SiteRepository
from sesame.staff.repository import StaffRepository
from sesame.staff.schemas import StaffCreate


class StaffService(CrudService[StaffAccount]):
    group = Group.STAFF
    noun = "staff account"
    repository_class = StaffRepository
    _password_hash: str | None = None

    async def prepare(self, data: Any) -> None:
        password = getattr(data, "password", None)
        if password is not None:
            self._password_hash = await self.runtime.passwords.hash(password.get_secret_value())

    def _hashed_password(self) -> str:
        if self._password_hash is None:
            raise RuntimeError("prepare() hashes the password before build() or apply()")
        return self._password_hash

    async def build(self, data: StaffCreate) -> StaffAccount:
        self._check_role_grant(data.role)
        partner_id = None
        if data.role is not StaffRole.PLATFORM_ADMIN:
            partner_id = await self.owning_partner(data.partner_id)
        elif data.partner_id is not None:
            raise ValidationFailed(
                "platform administrators belong to no partner",
                errors=[FieldError(("body", "partner_id"), "must be null", "not_allowed")],
            )
        staff = StaffAccount(
            partner_id=partner_id,
            email=data.email,
            name=data.name,
            role=data.role,
            password_hash=self._hashed_password(),
            is_active=True,
        )
        staff.site_scopes = await self._site_scopes(staff, data.site_ids)
        return staff

    async def apply(self, obj: StaffAccount, changes: dict[str, Any]) -> None:
        is_self = self.principal.staff_id == obj.id
        if "role" in changes and changes["role"] is not obj.role:
            if is_self:
                raise Forbidden("you cannot change your own role")
            self._check_role_grant(changes["role"])
            if (changes["role"] is StaffRole.PLATFORM_ADMIN) != (obj.partner_id is None):
                raise ValidationFailed(
                    "platform administrators have no partner and partner staff have one; "
                    "create a new account instead",
                    errors=[
                        FieldError(
                            ("body", "role"),
                            "cannot cross the partner line",
                            "role_change_not_allowed",
                        )
                    ],
                )
            obj.role = changes["role"]
        if changes.get("is_active") is False and is_self:
            raise Forbidden("you cannot deactivate yourself")
        ends_sessions = changes.get("is_active") is False or changes.get("password") is not None
        if changes.get("password") is not None:
            obj.password_hash = self._hashed_password()
        if changes.get("name") is not None:
            obj.name = changes["name"]
        if changes.get("is_active") is not None:
            obj.is_active = changes["is_active"]
        if "site_ids" in changes or "role" in changes:
            site_ids = changes.get("site_ids")
            obj.site_scopes = await self._site_scopes(
                obj, site_ids if site_ids is not None else obj.site_ids
            )
        if ends_sessions:
            # Someone changing their own password stays signed in where they did it.
            await SessionRepository(self.session).revoke_all_for_staff(
                obj.id,
                self.runtime.clock.now(),
                keep=self.principal.session_id if is_self else None,
            )
        # Cached credentials of this account must not keep its old role or sites.
        self.runtime.credential_cache.clear()

    async def before_delete(self, obj: StaffAccount) -> None:
        if self.principal.staff_id == obj.id:
            raise Forbidden("you cannot delete your own account")
        self.runtime.credential_cache.clear()

    def _check_role_grant(self, role: StaffRole) -> None:
        if role is StaffRole.PLATFORM_ADMIN and not self.principal.is_platform:
            raise Forbidden("only platform administrators grant the platform_admin role")

    async def _site_scopes(self, staff: StaffAccount, site_ids: list[UUID]) -> list[StaffSiteScope]:
        if not staff.role.site_scoped:
            if site_ids:
                raise ValidationFailed(
                    f"a {staff.role.value} is not limited to sites",
                    errors=[FieldError(("body", "site_ids"), "must be empty", "not_allowed")],
                )
            return []
        if not site_ids:
            raise ValidationFailed(
                f"a {staff.role.value} needs at least one site",
                errors=[FieldError(("body", "site_ids"), "at least one site", "missing")],
            )
        sites = SiteRepository(self.session)
        for site_id in dict.fromkeys(site_ids):
            site = await self.visible(sites, site_id, "site")
            if site.partner_id != staff.partner_id:
                raise ValidationFailed(
                    "every site must belong to the account's partner",
                    errors=[
                        FieldError(
                            ("body", "site_ids"),
                            f"site {site_id} is another partner's",
                            "wrong_partner",
                        )
                    ],
                )
        # Keep the rows of sites that stay, so the flush does not insert a duplicate key.
        kept = {scope.site_id: scope for scope in staff.site_scopes}
        return [
            kept.get(site_id) or StaffSiteScope(site_id=site_id)
            for site_id in dict.fromkeys(site_ids)
        ]
