"""The role rules: which role may do what (the table in docs/ARCHITECTURE.md, "Roles")."""
from __future__ import annotations

from ..catalogue import N_
from ..store.vocabulary import ROLES
ROLE_LABELS = {"nurse": N_("Nurse"), "doctor": N_("Doctor"),
               "supervisor": N_("Supervisor"), "admin": N_("Administrator")}

PERMISSIONS: dict[str, tuple[str, ...]] = {
    "diagnose": ("nurse", "doctor"),                     # register/find patients, run analyses
    "view_records": ("nurse", "doctor", "supervisor"),    # patients, records, images, print, PDF
    "decide_screening": ("nurse", "doctor"),             # decision on Pap smear / cervix type
    "decide_histopathology": ("doctor",),                # decision on breast/cervical histopathology
    "statistics": ROLES,                                 # aggregate counts only, no patient data
    "statistics_by_post": ("supervisor", "admin"),
    # Records and figures of every post a box holds (a supervisor's box imports many); nurses and
    # doctors see their own post's only (auth.records_post).
    "all_posts": ("supervisor", "admin"),
    "import": ("supervisor",),
    "export": ("admin",),
    "manage_users": ("admin",),
    "manage_models": ("admin",),
}
# Screening triage is a nurse's job at a health post; a histopathology diagnosis is a doctor's.
SCREENING_ANALYSES = ("pap_smear", "cervix_type")


def allowed(user: dict | None, permission: str) -> bool:
    return bool(user) and user["role"] in PERMISSIONS[permission]


def may_decide(user: dict | None, analysis_id: str) -> bool:
    permission = "decide_screening" if analysis_id in SCREENING_ANALYSES else "decide_histopathology"
    return allowed(user, permission)
