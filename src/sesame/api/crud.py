"""Create, read, update, list and delete, written once for every tenant-owned resource.

A resource supplies its schemas, a repository (SQL and filters) and a ``CrudService``
subclass (how to build a row from input and what must hold). This module supplies the
rest, identically everywhere: permission checks, tenant scoping, keyset pagination,
``Location`` headers, null-safety on updates and 409s for conflicts and dependents.
"""

# No ``from __future__ import annotations`` here: the endpoint functions below annotate
# their parameters with classes chosen at run time, which FastAPI must see as objects.

import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.deps import AppRuntime, CurrentPrincipal, DbSession, principal_of
from sesame.api.route import API_PREFIX, DIRECT_HANDLER, SesameRoute, runtime_of
from sesame.auth.principal import Action, Group, Principal
from sesame.kit.errors import (
    Conflict,
    FieldError,
    HasDependents,
    NotFound,
    ValidationFailed,
)
from sesame.kit.pagination import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_cursor,
    next_cursor,
)
from sesame.kit.repository import CrudRepository
from sesame.partners.repository import PartnerRepository
from sesame.runtime import Runtime

M = TypeVar("M")


def _refuse_nul(value: Any) -> Any:
    """NUL characters are refused up front: PostgreSQL cannot store them in text."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    items = text if isinstance(text, list) else [text]
    if any(isinstance(item, str) and "\x00" in item for item in items):
        raise ValueError("must not contain NUL characters")
    return value


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _kinds(annotation: Any) -> set[Any]:
    arguments = typing.get_args(annotation)
    if not arguments:
        return {annotation}
    return set().union(*(_kinds(argument) for argument in arguments))


def _refuse_coercion(cls: type[BaseModel], data: Any) -> Any:
    """Only what the document says: pydantic would read ``0.5`` as a time (seconds since
    1970), ``0`` as a date and as false; times are RFC 3339 and booleans true or false."""
    if not isinstance(data, dict):
        return data
    for name, field in cls.model_fields.items():
        value = data.get(name)
        if value is None or isinstance(value, bool):
            continue
        kinds = _kinds(field.annotation)
        numeric = isinstance(value, int | float) or (
            isinstance(value, str) and _NUMBER.fullmatch(value) is not None
        )
        if numeric and kinds & {datetime, date}:
            raise ValueError(f"{name}: use an RFC 3339 date or time, not a number")
        if isinstance(value, int | float) and bool in kinds:
            raise ValueError(f"{name}: must be true or false")
    return data


# Update models of resources: the fields their table cannot hold null in. Omitting such a
# field leaves it alone; the document must not offer null for it.
_NOT_NULL_FIELDS: dict[type[BaseModel], frozenset[str]] = {}


NUL_FREE_PATTERN = "^[^\\u0000]*$"


def _declare_nul_free(node: Any) -> None:
    """Give the document's plain strings the pattern ``_refuse_nul`` enforces."""
    if isinstance(node, list):
        for item in node:
            _declare_nul_free(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
        node["pattern"] = NUL_FREE_PATTERN
    for key in ("anyOf", "oneOf", "allOf", "items", "additionalProperties"):
        _declare_nul_free(node.get(key))
    for child in (node.get("properties") or {}).values():
        _declare_nul_free(child)


def _input_json_schema(schema: dict[str, Any], model: type[Any]) -> None:
    _declare_nul_free(schema)
    properties = schema.get("properties", {})
    for name in _NOT_NULL_FIELDS.get(model, frozenset()) & set(properties):
        field = properties[name]
        options = [o for o in field.pop("anyOf", [field]) if o.get("type") != "null"]
        field.pop("default", None)
        if len(options) == 1:
            field.update(options[0])
        else:
            field["anyOf"] = options


class InputModel(BaseModel):
    """Request bodies: unknown fields are errors, strings are trimmed and never hold NUL
    (the document says so too)."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra=_input_json_schema
    )

    _no_nul = field_validator("*", mode="after")(_refuse_nul)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, data: Any) -> Any:
        return _refuse_coercion(cls, data)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListQuery(BaseModel):
    """Query of a list endpoint; resources add their filters to it."""

    model_config = ConfigDict(extra="forbid")

    _no_nul = field_validator("*", mode="after")(_refuse_nul)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, data: Any) -> Any:
        return _refuse_coercion(cls, data)

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page.")
    cursor: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page."
    )


def conflict_from(exc: IntegrityError, noun: str) -> Conflict:
    text = str(exc.orig).lower() if exc.orig is not None else ""
    if "foreign key" in text:
        return HasDependents(f"the {noun} is still referenced; remove what depends on it first")
    return Conflict(f"a {noun} with these values already exists")


class CrudService(Generic[M]):
    group: ClassVar[Group]
    noun: ClassVar[str]
    repository_class: ClassVar[type[CrudRepository[Any]]]

    def __init__(self, session: AsyncSession, principal: Principal, runtime: Runtime) -> None:
        self.session = session
        self.principal = principal
        self.runtime = runtime
        self.repository = self.repository_class(session)

    # -- the five operations ---------------------------------------------------------------

    async def get(self, object_id: UUID) -> M:
        self.principal.require(self.group, Action.READ)
        obj: M = await self.visible(self.repository, object_id, self.noun)
        return obj

    async def list(self, query: ListQuery) -> tuple[Sequence[M], str | None]:
        self.principal.require(self.group, Action.READ)
        after = decode_cursor(query.cursor) if query.cursor else None
        rows = await self.repository.list(
            self.principal.scope,
            clauses=self.repository.filter_clauses(query),
            limit=query.limit,
            after=after,
        )
        return rows[: query.limit], next_cursor(rows, query.limit)

    async def create(self, data: BaseModel) -> M:
        self.principal.require(self.group, Action.WRITE)
        await self.prepare(data)
        obj = await self.build(data)
        try:
            added: M = await self.repository.add(obj)
            return added
        except IntegrityError as exc:
            raise conflict_from(exc, self.noun) from exc

    async def update(self, object_id: UUID, data: BaseModel) -> M:
        self.principal.require(self.group, Action.WRITE)
        await self.prepare(data)
        obj: M = await self.visible(self.repository, object_id, self.noun)
        changes = data.model_dump(exclude_unset=True)
        self._refuse_nulls(obj, changes)
        await self.apply(obj, changes)
        try:
            await self.repository.flush()
        except IntegrityError as exc:
            raise conflict_from(exc, self.noun) from exc
        return obj

    async def delete(self, object_id: UUID) -> None:
        self.principal.require(self.group, Action.WRITE)
        obj = await self.visible(self.repository, object_id, self.noun)
        await self.before_delete(obj)
        try:
            await self.repository.delete(obj)
        except IntegrityError as exc:
            raise conflict_from(exc, self.noun) from exc

    # -- hooks for each resource -----------------------------------------------------------

    async def prepare(self, data: Any) -> None:
        """Slow work on the input (hashing a password) before the first query of a create
        or update: on SQLite the request's transaction holds the one write lock from its
        first statement, so nothing slow may run after it."""
        return None

    async def build(self, data: Any) -> M:
        raise NotImplementedError

    async def apply(self, obj: M, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(obj, name, value)

    async def before_delete(self, obj: M) -> None:
        return None

    # -- helpers ---------------------------------------------------------------------------

    async def owning_partner(self, requested: UUID | None) -> UUID:
        """The partner a new object belongs to: the caller's own, or (platform staff) the one
        named in the body, which must exist."""
        own = self.principal.scope.partner_id
        if own is None:
            if requested is None:
                raise ValidationFailed(
                    "partner_id is required for platform staff",
                    errors=[FieldError(("body", "partner_id"), "required", "missing")],
                )
            partner = await self.visible(PartnerRepository(self.session), requested, "partner")
            return UUID(str(partner.id))
        if requested is not None and requested != own:
            raise NotFound(f"partner {requested} not found")
        return own

    async def visible(self, repository: CrudRepository[Any], object_id: UUID, noun: str) -> Any:
        """The object if the caller may see it; otherwise 404, whether or not it exists."""
        obj = await repository.get(self.principal.scope, object_id)
        if obj is None:
            raise NotFound(f"{noun} {object_id} not found")
        return obj

    def _refuse_nulls(self, obj: Any, changes: dict[str, Any]) -> None:
        columns = obj.__table__.columns
        errors = [
            FieldError(("body", name), "may not be null", "null_not_allowed")
            for name, value in changes.items()
            if value is None and name in columns and not columns[name].nullable
        ]
        if errors:
            raise ValidationFailed("some fields may not be null", errors=errors)


@dataclass(frozen=True)
class ResourceSpec:
    noun: str  # "site"
    plural: str  # "sites"
    service: type[CrudService[Any]]
    read: type[BaseModel]
    create: type[BaseModel]
    update: type[BaseModel]
    query: type[ListQuery]
    operations: frozenset[str] = frozenset({"create", "read", "list", "update", "delete"})
    # The list operation is ``list_<plural>``; a plural that is a path (``a/b``) names it here.
    list_name: str | None = None

    def __post_init__(self) -> None:
        name = self.list_name or self.plural.replace("-", "_")
        if not name.isidentifier():
            raise ValueError(f"list_{name} is not an operation id; give the spec a list_name")


def crud_router(spec: ResourceSpec) -> APIRouter:
    """The five endpoints of a resource, with stable operation ids like ``create_site``."""
    router = APIRouter(
        prefix=f"{API_PREFIX}/{spec.plural}", tags=[spec.plural], route_class=SesameRoute
    )
    service_class = spec.service
    read_model = spec.read
    page_model = Page[read_model]  # type: ignore[valid-type]
    create_model = spec.create
    update_model = spec.update
    query_model = spec.query
    noun = spec.noun
    columns = service_class.repository_class.model.__table__.columns
    _NOT_NULL_FIELDS[update_model] = frozenset(
        name for name in update_model.model_fields if name in columns and not columns[name].nullable
    )

    async def create(
        body: create_model,  # type: ignore[valid-type]
        response: Response,
        session: DbSession,
        principal: CurrentPrincipal,
        runtime: AppRuntime,
    ) -> Any:
        obj = await service_class(session, principal, runtime).create(body)
        response.headers["Location"] = f"{API_PREFIX}/{spec.plural}/{obj.id}"
        return obj

    async def read(
        object_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
    ) -> Any:
        return await service_class(session, principal, runtime).get(object_id)

    read_adapter: TypeAdapter[Any] = TypeAdapter(read_model)

    async def read_directly(request: Request) -> Response:
        """``read`` as FastAPI would run it (the same principal, the same validated and
        serialised answer), without its per-request dependency solving: the path's
        ``uuid`` convertor has already made ``object_id`` a UUID. The most frequent
        request there is, so it costs what it must and no more."""
        runtime = runtime_of(request)
        principal = await principal_of(request, runtime)
        service = service_class(request.state.db, principal, runtime)
        obj = await service.get(request.path_params["object_id"])
        body = read_adapter.dump_json(read_adapter.validate_python(obj, from_attributes=True))
        return Response(body, media_type="application/json")

    setattr(read, DIRECT_HANDLER, read_directly)

    async def list_(
        query: Annotated[query_model, Query()],  # type: ignore[valid-type]
        session: DbSession,
        principal: CurrentPrincipal,
        runtime: AppRuntime,
    ) -> Any:
        items, cursor = await service_class(session, principal, runtime).list(query)
        return page_model(items=[read_model.model_validate(i) for i in items], next_cursor=cursor)

    async def update(
        object_id: UUID,
        body: update_model,  # type: ignore[valid-type]
        session: DbSession,
        principal: CurrentPrincipal,
        runtime: AppRuntime,
    ) -> Any:
        return await service_class(session, principal, runtime).update(object_id, body)

    async def delete(
        object_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
    ) -> Response:
        await service_class(session, principal, runtime).delete(object_id)
        return Response(status_code=204)

    errors: dict[int | str, dict[str, Any]] = {
        404: {"description": f"No such {noun} visible to the caller"}
    }
    operations: list[tuple[str, str, Any, str, dict[str, Any]]] = [
        (
            "create",
            "POST",
            create,
            "",
            {
                "status_code": 201,
                "response_model": read_model,
                "operation_id": f"create_{noun}",
                "summary": f"Create a {noun}",
                "responses": {409: {"description": "Conflicts with an existing object"}},
            },
        ),
        (
            "list",
            "GET",
            list_,
            "",
            {
                "response_model": page_model,
                "operation_id": f"list_{spec.list_name or spec.plural.replace('-', '_')}",
                "summary": f"List {spec.plural}",
            },
        ),
        (
            "read",
            "GET",
            read,
            "/{object_id}",
            {
                "response_model": read_model,
                "operation_id": f"get_{noun}",
                "summary": f"Get a {noun}",
                "responses": errors,
            },
        ),
        (
            "update",
            "PATCH",
            update,
            "/{object_id}",
            {
                "response_model": read_model,
                "operation_id": f"update_{noun}",
                "summary": f"Update a {noun}",
                "responses": errors,
            },
        ),
        (
            "delete",
            "DELETE",
            delete,
            "/{object_id}",
            {
                "status_code": 204,
                "operation_id": f"delete_{noun}",
                "summary": f"Delete a {noun}",
                "responses": errors,
                "response_class": Response,
            },
        ),
    ]
    for name, method, endpoint, path, options in operations:
        if name in spec.operations:
            router.add_api_route(path, endpoint, methods=[method], **options)
    return router
