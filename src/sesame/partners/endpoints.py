from sesame.api.crud import ResourceSpec, crud_router
from sesame.partners.schemas import PartnerCreate, PartnerQuery, PartnerRead, PartnerUpdate
from sesame.partners.service import PartnerService

router = crud_router(
    ResourceSpec(
        noun="partner",
        plural="partners",
        service=PartnerService,
        read=PartnerRead,
        create=PartnerCreate,
        update=PartnerUpdate,
        query=PartnerQuery,
    )
)
