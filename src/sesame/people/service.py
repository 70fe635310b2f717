"""Rules for people and households.

A person belongs to one partner and, optionally, to the site that manages them; staff
scoped to sites see and create only people of their sites. A household joins a person to
a unit of the same partner; its dates are checked in order (a move-out before the
move-in is refused, not stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sesame.api.crud import CrudService
from sesame.auth.principal import Group
from sesame.keys import lifecycle
from sesame.kit.errors import FieldError, NotFound, ValidationFailed
from sesame.kit.repository import TenantScope
from sesame.models import Household, Person, PersonKind
from sesame.outbox import repository as outbox
from sesame.people.repository import HouseholdRepository, PersonRepository
from sesame.people.schemas import HouseholdCreate, PersonCreate
from sesame.sites.repository import SiteRepository, UnitRepository


class PersonService(CrudService[Person]):
    group = Group.PEOPLE
    noun = "person"
    repository_class = PersonRepository

    async def build(self, data: PersonCreate) -> Person:
        partner_id = await self.owning_partner(data.partner_id)
        person = Person(
            partner_id=partner_id,
            site_id=data.site_id,
            phone=data.phone,
            name=data.name,
            locale=data.locale,
            kind=data.kind,
        )
        await self._check_site(person)
        return person

    async def create(self, data: Any) -> Person:
        """A resident added is invited: an SMS in their language says how to sign in,
        sent from the outbox after the commit (``person.invited``; never the phone)."""
        person = await super().create(data)
        if person.kind is PersonKind.RESIDENT:
            await outbox.append(
                self.session,
                [
                    outbox.message(
                        "person.invited",
                        partner_id=person.partner_id,
                        aggregate_id=person.id,
                        person_id=person.id,
                        site_id=person.site_id,
                    )
                ],
            )
        return person

    async def apply(self, obj: Person, changes: dict[str, Any]) -> None:
        await super().apply(obj, changes)
        await self._check_site(obj)

    async def _check_site(self, person: Person) -> None:
        if person.site_id is None:
            if self.principal.is_site_scoped:
                raise ValidationFailed(
                    "site staff must place the person in one of their sites",
                    errors=[FieldError(("body", "site_id"), "required", "missing")],
                )
            return
        site = await self.visible(SiteRepository(self.session), person.site_id, "site")
        if site.partner_id != person.partner_id:
            raise ValidationFailed(
                "the site belongs to another partner",
                errors=[FieldError(("body", "site_id"), "another partner's site", "wrong_partner")],
            )


class HouseholdService(CrudService[Household]):
    group = Group.PEOPLE
    noun = "household"
    repository_class = HouseholdRepository

    async def build(self, data: HouseholdCreate) -> Household:
        unit = await self.visible(UnitRepository(self.session), data.unit_id, "unit")
        # Site staff may add any person of their partner to a unit of their sites: a
        # resident moving between complexes keeps one record.
        partner_wide = TenantScope(partner_id=self.principal.scope.partner_id)
        person = await PersonRepository(self.session).get(partner_wide, data.person_id)
        if person is None:
            raise NotFound(f"person {data.person_id} not found")
        if person.partner_id != unit.partner_id:
            raise ValidationFailed(
                "the person and the unit belong to different partners",
                errors=[
                    FieldError(("body", "person_id"), "another partner's person", "wrong_partner")
                ],
            )
        return Household(
            partner_id=unit.partner_id,
            site_id=unit.site_id,
            unit_id=unit.id,
            person_id=person.id,
            role=data.role,
            move_in_on=data.move_in_on,
            move_out_on=data.move_out_on,
        )

    async def create(self, data: Any) -> Household:
        household = await super().create(data)
        await lifecycle.on_move_in(self.session, self.runtime, household)
        return household

    async def before_delete(self, obj: Household) -> None:
        await lifecycle.on_move_out(self.session, self.runtime, obj)

    async def apply(self, obj: Household, changes: dict[str, Any]) -> None:
        move_in = changes.get("move_in_on", obj.move_in_on)
        move_out = changes.get("move_out_on", obj.move_out_on)
        if move_in and move_out and move_out < move_in:
            raise ValidationFailed(
                "move_out_on is before move_in_on",
                errors=[FieldError(("body", "move_out_on"), "before move_in_on", "date_order")],
            )
        await super().apply(obj, changes)
        await lifecycle.on_household_change(self.session, self.runtime, obj)


async def households_of(session: Any, person_ids: Sequence[UUID]) -> Sequence[Household]:
    return await HouseholdRepository(session).for_people(person_ids)


async def people_by_ids(session: Any, person_ids: Sequence[UUID]) -> Sequence[Person]:
    return await PersonRepository(session).by_ids(person_ids)
