from sesame.api.crud import ResourceSpec, crud_router
from sesame.staff.schemas import StaffCreate, StaffQuery, StaffRead, StaffUpdate
from sesame.staff.service import StaffService

router = crud_router(
    ResourceSpec(
        "staff_account", "staff", StaffService, StaffRead, StaffCreate, StaffUpdate, StaffQuery
    )
)
