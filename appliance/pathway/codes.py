"""The value sets of the screening pathway: visit, tests, HIV status, eligibility, treatment,
referral and follow-up.

Each code is our own short id (stored in the records) with the WHO SMART data element it
stands for (the SMART HIV guidelines' cervical items ``HIV.D.DE656``-``DE741``, the CxCa DAK's
``CXCA.D`` elements) and the Ethiopia FHIR guide's code where one exists, so that an export is
a lookup in this table, not a translation. ``docs/pathway-codes.md`` prints the same table.

Every value set has a default that says nothing was done or nothing is known ("not done",
"unknown", "not recorded"): a record never carries a guessed value.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..i18n import N_, TranslatableError

# Code systems the references below are written in.
SMART_HIV = "http://smart.who.int/hiv/CodeSystem/HIVConcepts"
SMART_CXCA = "http://smart.who.int/cxca/CodeSystem/CXCA.D"
ETHIOPIA = "http://moh.gov.et/fhir/hiv/CodeSystem"


@dataclass(frozen=True)
class Code:
    id: str
    name: str                 # English, marked for translation; shown translated
    smart: str = ""           # WHO SMART data element id (HIV.D.DE…, CXCA.D#DE…)
    ethiopia: str = ""        # Ethiopia FHIR guide code, "<code system>#<code>"


@dataclass(frozen=True)
class ValueSet:
    id: str
    name: str
    codes: tuple[Code, ...]
    default: str
    element: str = ""         # the SMART data element of the question itself

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.codes)

    def code(self, code_id: str) -> Code:
        for c in self.codes:
            if c.id == code_id:
                return c
        raise KeyError(f"{self.id} has no code {code_id!r}")

    def __contains__(self, code_id) -> bool:
        return any(c.id == code_id for c in self.codes)

    def check(self, value) -> str:
        """``value`` if it is one of the codes (None or "" give the default); a sentence if not."""
        if value in (None, ""):
            return self.default
        if value not in self:
            raise BadCode(N_("%(value)r is not a possible answer for %(question)s."),
                          N_("Choose one of: %(choices)s."), value=value, question=self.name,
                          choices=", ".join(self.ids))
        return value


class BadCode(TranslatableError):
    """An answer that is not in its value set."""


def _vs(id: str, name: str, default: str, codes: tuple[Code, ...], element: str = "") -> ValueSet:
    vs = ValueSet(id, name, codes, default, element)
    assert default in vs, id
    return vs


NOT_DONE = "not_done"
UNKNOWN = "unknown"
NOT_RECORDED = "not_recorded"

# -- the visit ----------------------------------------------------------------------------------

FIRST_SCREENING, RESCREENING, POST_TREATMENT = "first_screening", "rescreening", "post_treatment_followup"
VISIT_TYPE = _vs("visit_type", N_("Visit type"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code(FIRST_SCREENING, N_("First screening"), "HIV.D.DE657 = 1"),
    Code(RESCREENING, N_("Rescreening"), "HIV.D.DE657 > 1",
         f"{ETHIOPIA}/cervical-cancer-screening-type-code-system#Routine-Screening-previous-result-negative"),
    Code(POST_TREATMENT, N_("Post-treatment follow-up"), "HIV.D.DE728",
         f"{ETHIOPIA}/cervical-cancer-screening-type-code-system#post-treatment-follow-up-screening"),
), element="HIV.D.DE657")

HIV_STATUS = _vs("hiv_status", N_("HIV status"), UNKNOWN, (
    Code(UNKNOWN, N_("Unknown"), f"{SMART_CXCA}#DE19"),
    Code("positive", N_("Living with HIV"), f"{SMART_CXCA}#DE17"),
    Code("negative", N_("HIV negative"), f"{SMART_CXCA}#DE18"),
))

# -- tests --------------------------------------------------------------------------------------

HPV_RESULT = _vs("hpv_result", N_("HPV test"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("negative", N_("HPV negative"), "HIV.D.DE665", f"{ETHIOPIA}/hpv-screening-result-code-system#hpv-negative"),
    Code("positive", N_("HPV positive"), "HIV.D.DE666", f"{ETHIOPIA}/hpv-screening-result-code-system#hpv-positive"),
    Code("invalid", N_("HPV test invalid"), "HIV.D.DE667",
         f"{ETHIOPIA}/hpv-screening-result-code-system#hpv-screening-result-unknown"),
), element="HIV.D.DE664")

HPV_GENOTYPE = _vs("hpv_genotype", N_("HPV genotype"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("hpv16_18", N_("HPV 16/18"), "HIV.D.DE689"),
    Code("other_high_risk", N_("Other high-risk HPV"), "HIV.D.DE690"),
), element="HIV.D.DE688")

HPV_SAMPLE = _vs("hpv_sample", N_("HPV sample"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("self", N_("Self-collected")),
    Code("clinician", N_("Collected by the clinician")),
))

VIA_RESULT = _vs("via_result", N_("VIA"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("negative", N_("VIA negative"), "HIV.D.DE669", f"{ETHIOPIA}/via-screening-result-code-system#via-negative"),
    Code("positive", N_("VIA positive"), "HIV.D.DE670",
         f"{ETHIOPIA}/via-screening-result-code-system#via-positive-cryo-thermo-coagulation-eligible | "
         "#via-positive-cryo-thermo-coagulation-non-eligible (by the eligibility outcome)"),
    Code("suspicious", N_("Suspicious for cancer"), "HIV.D.DE671",
         f"{ETHIOPIA}/via-screening-result-code-system#cervical-cancer-suspicious"),
    Code("invalid", N_("VIA not readable"), "HIV.D.DE672",
         f"{ETHIOPIA}/via-screening-result-code-system#screening-result-unknown"),
), element="HIV.D.DE668")

# Cytology comes from the visit's Pap smear exam: the clinician's class of it (or that it waits).
AWAITING = "awaiting_decision"
CYTOLOGY_RESULT = _vs("cytology_result", N_("Cytology (Pap smear)"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("normal", N_("Cytology normal"), "HIV.D.DE674"),
    Code("abnormal", N_("Cytology abnormal"), "HIV.D.DE675-DE678 (ASC-US or worse; not graded here)"),
    Code(AWAITING, N_("Awaiting the clinician's decision")),
    Code("inadequate", N_("Cytology not readable"), "HIV.D.DE679"),
), element="HIV.D.DE673")

COLPOSCOPY_RESULT = _vs("colposcopy_result", N_("Colposcopy"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("normal", N_("Normal colposcopic findings"), "HIV.D.DE692"),
    Code("abnormal", N_("Abnormal colposcopic findings"), "HIV.D.DE693"),
    Code("suspicious", N_("Suspicious for invasive cancer"), "HIV.D.DE694"),
    Code("inadequate", N_("Colposcopy inadequate"), "HIV.D.DE696"),
), element="HIV.D.DE691")

# The transformation zone types are the cervix type analysis's classes (appliance.catalogue).
TZ_TYPE = _vs("tz_type", N_("Transformation zone"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code("type_1", N_("Type 1")),
    Code("type_2", N_("Type 2")),
    Code("type_3", N_("Type 3")),
))

# -- ablation eligibility (WHO checklist) ---------------------------------------------------------

ANSWER = _vs("answer", N_("Answer"), UNKNOWN, (
    Code(UNKNOWN, N_("Not checked")),
    Code("yes", N_("Yes")),
    Code("no", N_("No")),
))

NOT_ASSESSED, ELIGIBLE_ABLATION, NEEDS_EXCISION, REFER = "not_assessed", "eligible_ablation", "needs_excision", "refer"
ELIGIBILITY_OUTCOME = _vs("eligibility_outcome", N_("Treatment eligibility"), NOT_ASSESSED, (
    Code(NOT_ASSESSED, N_("Not assessed")),
    Code(ELIGIBLE_ABLATION, N_("Eligible for ablation"), "",
         f"{ETHIOPIA}/via-screening-result-code-system#via-positive-cryo-thermo-coagulation-eligible"),
    Code(NEEDS_EXCISION, N_("Needs excision (LEEP/LLETZ)"), "",
         f"{ETHIOPIA}/via-screening-result-code-system#via-positive-cryo-thermo-coagulation-non-eligible"),
    Code(REFER, N_("Refer (suspected cancer)"), "",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#referred-for-suspicious-cancer-evaluation"),
))

# -- treatment ----------------------------------------------------------------------------------

RECEIVED = "received"
TREATMENT_STATUS = _vs("treatment_status", N_("Treatment"), NOT_DONE, (
    Code(NOT_DONE, N_("Not treated"), "", f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#no-treatment"),
    Code(RECEIVED, N_("Treated"), "HIV.D.DE718"),
))

OFFERED = _vs("treatment_offered", N_("Treatment offered"), UNKNOWN, (
    Code(UNKNOWN, N_("Not recorded")),
    Code("yes", N_("Offered")),
    Code("no", N_("Not offered")),
))

THERMAL_ABLATION, CRYOTHERAPY, LEEP = "thermal_ablation", "cryotherapy", "leep"
ABLATIVE_METHODS = (THERMAL_ABLATION, CRYOTHERAPY)
TREATMENT_METHOD = _vs("treatment_method", N_("Treatment method"), NOT_DONE, (
    Code(NOT_DONE, N_("Not done")),
    Code(THERMAL_ABLATION, N_("Thermal ablation"), "HIV.D.DE721",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#thermo-coagulation"),
    Code(CRYOTHERAPY, N_("Cryotherapy"), "HIV.D.DE720",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#cryotherapy"),
    Code(LEEP, N_("LEEP/LLETZ"), "HIV.D.DE725", f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#leep"),
    Code("other", N_("Other treatment"), "HIV.D.DE726"),
), element="HIV.D.DE719")

NOT_TREATED_REASON = _vs("not_treated_reason", N_("Reason not treated"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("refused", N_("Refused or postponed by the woman")),
    Code("not_eligible", N_("Not eligible for treatment here")),
    Code("equipment", N_("Equipment or supplies not available")),
    Code("referred", N_("Referred"), "",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#referred-for-leep"),
    Code("pregnant", N_("Pregnant")),
    Code("other", N_("Other reason")),
))

# -- referral -----------------------------------------------------------------------------------

CERVICAL, BREAST = "cervical", "breast"
PROGRAMME = _vs("programme", N_("Programme"), CERVICAL, (
    Code(CERVICAL, N_("Cervical cancer")),
    Code(BREAST, N_("Breast cancer")),
))

REFERRAL_REASON = _vs("referral_reason", N_("Reason for referral"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("suspected_cancer", N_("Suspected cancer"), "",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#referred-for-suspicious-cancer-evaluation"),
    Code("excision", N_("Needs excision (LEEP/LLETZ)"), "",
         f"{ETHIOPIA}/precancerous-lesion-treatment-received-code-system#referred-for-leep"),
    Code("colposcopy", N_("Colposcopy or biopsy")),
    Code("equipment", N_("Treatment not available here")),
    Code("surgery", N_("Surgery")),
    Code("oncology", N_("Oncology")),
    Code("other", N_("Other reason")),
), element="HIV.A.DE4")

URGENCY = _vs("urgency", N_("Urgency"), "routine", (
    Code("routine", N_("Routine")),
    Code("urgent", N_("Urgent")),
))

PENDING, ATTENDED, NOT_ATTENDED = "pending", "attended", "not_attended"
REFERRAL_OUTCOME = _vs("referral_outcome", N_("Referral outcome"), PENDING, (
    Code(PENDING, N_("No news yet")),
    Code(ATTENDED, N_("Attended")),
    Code(NOT_ATTENDED, N_("Did not attend")),
))

# The hospital's result (histopathology when a biopsy was taken).
HOSPITAL_RESULT = _vs("hospital_result", N_("Hospital's result"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("normal", N_("Normal"), "HIV.D.DE698"),
    Code("lsil", N_("LSIL (CIN1)"), "HIV.D.DE699"),
    Code("hsil", N_("HSIL (CIN2/CIN3)"), "HIV.D.DE700"),
    Code("invasive_cancer", N_("Invasive cancer"), "HIV.D.DE701"),
    Code("benign", N_("Benign")),
    Code("other", N_("Other result")),
), element="HIV.D.DE697")

YES_NO_UNKNOWN = _vs("yes_no", N_("Answer"), UNKNOWN, (
    Code(UNKNOWN, N_("Not known")),
    Code("yes", N_("Yes")),
    Code("no", N_("No")),
))

HOSPITAL_TREATMENT = _vs("hospital_treatment", N_("Treatment at the hospital"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("none", N_("No treatment")),
    Code(LEEP, N_("LEEP/LLETZ"), "HIV.D.DE725"),
    Code(THERMAL_ABLATION, N_("Thermal ablation"), "HIV.D.DE721"),
    Code(CRYOTHERAPY, N_("Cryotherapy"), "HIV.D.DE720"),
    Code("cold_knife_conization", N_("Cold knife conization"), "HIV.D.DE723"),
    Code("hysterectomy", N_("Hysterectomy"), "HIV.D.DE734"),
    Code("surgery", N_("Surgery")),
    Code("radiotherapy", N_("Radiotherapy"), "HIV.D.DE736"),
    Code("chemotherapy", N_("Chemotherapy"), "HIV.D.DE737"),
    Code("chemoradiation", N_("Chemoradiation"), "HIV.D.DE738"),
    Code("other", N_("Other treatment"), "HIV.D.DE739"),
), element="HIV.D.DE741")

# -- follow-up ----------------------------------------------------------------------------------

RESCREEN, RETURN_FOR_TREATMENT, TRIAGE_RETEST = "rescreen", "return_for_treatment", "triage_retest"
FOLLOWUP_PURPOSE = _vs("followup_purpose", N_("Next visit"), RESCREEN, (
    Code(RESCREEN, N_("Rescreening")),
    Code(POST_TREATMENT, N_("Post-treatment follow-up"), "HIV.D.DE728"),
    Code(RETURN_FOR_TREATMENT, N_("Return for treatment")),
    Code(TRIAGE_RETEST, N_("Repeat HPV test")),
    Code("referral", N_("After the referral")),
    Code("other", N_("Other follow-up")),
), element="HIV.D.DE776")

DUE, CONTACTED, RESCHEDULED, LOST = "due", "contacted", "rescheduled", "lost"
FOLLOWUP_STATE = _vs("followup_state", N_("Follow-up"), DUE, (
    Code(DUE, N_("Due")),
    Code(CONTACTED, N_("Contacted")),
    Code(RESCHEDULED, N_("Rescheduled")),
    Code(ATTENDED, N_("Attended")),
    Code(LOST, N_("Lost to follow-up"), "HIV.D.DE652"),
))
OPEN_STATES = (DUE, CONTACTED, RESCHEDULED)

CONTACT_METHOD = _vs("contact_method", N_("How she was contacted"), "phone", (
    Code("phone", N_("Phone call")),
    Code("sms", N_("Text message")),
    Code("home_visit", N_("Home visit by a health extension worker")),
    Code("other", N_("Other")),
))

LOST_REASON = _vs("lost_reason", N_("Reason lost to follow-up"), NOT_RECORDED, (
    Code(NOT_RECORDED, N_("Not recorded")),
    Code("unreachable", N_("Could not be reached")),
    Code("moved", N_("Moved away")),
    Code("declined", N_("Declined further care")),
    Code("died", N_("Died"), "HIV.D.DE744"),
    Code("care_elsewhere", N_("Cared for elsewhere")),
    Code("other", N_("Other reason")),
))

# Every value set, for docs/pathway-codes.md and the checks of incoming records.
VALUE_SETS: dict[str, ValueSet] = {vs.id: vs for vs in (
    VISIT_TYPE, HIV_STATUS, HPV_RESULT, HPV_GENOTYPE, HPV_SAMPLE, VIA_RESULT, CYTOLOGY_RESULT, COLPOSCOPY_RESULT,
    TZ_TYPE, ANSWER, ELIGIBILITY_OUTCOME, TREATMENT_STATUS, OFFERED, TREATMENT_METHOD, NOT_TREATED_REASON,
    PROGRAMME, REFERRAL_REASON, URGENCY, REFERRAL_OUTCOME, HOSPITAL_RESULT, YES_NO_UNKNOWN, HOSPITAL_TREATMENT,
    FOLLOWUP_PURPOSE, FOLLOWUP_STATE, CONTACT_METHOD, LOST_REASON)}
