from sesame.api.crud import ResourceSpec, crud_router
from sesame.people import schemas
from sesame.people.service import HouseholdService, PersonService

routers = [
    crud_router(spec)
    for spec in (
        ResourceSpec(
            "person",
            "people",
            PersonService,
            schemas.PersonRead,
            schemas.PersonCreate,
            schemas.PersonUpdate,
            schemas.PersonQuery,
        ),
        ResourceSpec(
            "household",
            "households",
            HouseholdService,
            schemas.HouseholdRead,
            schemas.HouseholdCreate,
            schemas.HouseholdUpdate,
            schemas.HouseholdQuery,
        ),
    )
]
