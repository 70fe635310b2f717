from sesame.api.crud import ResourceSpec, crud_router
from sesame.sites import schemas
from sesame.sites.service import BuildingService, EntranceService, SiteService, UnitService

routers = [
    crud_router(spec)
    for spec in (
        ResourceSpec(
            "site",
            "sites",
            SiteService,
            schemas.SiteRead,
            schemas.SiteCreate,
            schemas.SiteUpdate,
            schemas.SiteQuery,
        ),
        ResourceSpec(
            "building",
            "buildings",
            BuildingService,
            schemas.BuildingRead,
            schemas.BuildingCreate,
            schemas.BuildingUpdate,
            schemas.BuildingQuery,
        ),
        ResourceSpec(
            "unit",
            "units",
            UnitService,
            schemas.UnitRead,
            schemas.UnitCreate,
            schemas.UnitUpdate,
            schemas.UnitQuery,
        ),
        ResourceSpec(
            "entrance",
            "entrances",
            EntranceService,
            schemas.EntranceRead,
            schemas.EntranceCreate,
            schemas.EntranceUpdate,
            schemas.EntranceQuery,
        ),
    )
]
