"""The screening pathway's workflow over the visits, referrals and follow-ups (``store.care``).

A service over the kinds, like ``statistics`` and ``transfer``: it is made by ``Store`` with the
core and the kinds it uses, and it writes several records as one (a visit, its referral, the
follow-up it proposes and the follow-ups it closes reach the disk together or not at all).
Every change is audited by the store (``visit.save``, ``visit.update``, ``referral.create``,
``referral.outcome``, ``followup.create``, ``followup.<action>``) and every replaced version is
kept in the store's history.

What the kiosk, the command line and the exchange call:

- ``visit_form(patient_uuid, exam_uuids)``: a new visit's answers, every one "not done" or
  "unknown", with the exams' results filled in and the checklist pre-filled (suggestions marked);
- ``propose(visit, referred)``: the next visit the rules table proposes;
- ``save_visit``, ``update_visit``, ``record_treatment``; ``refer``, ``record_referral_outcome``;
  ``followup_action``, ``schedule_followup``;
- ``followup_list(today)``: the home screen's list; ``indicators(...)``: the programme's figures;
- ``for_patient(patient_uuid)``: her visits, referrals and follow-ups.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Callable

from .. import catalogue, clock
from ..errors import NotFound
from ..i18n import N_, translatable
from ..pathway import eligibility as checklist
from ..pathway import indicators as pathway_indicators
from ..pathway import outcomes
from ..pathway.codes import (ATTENDED, AWAITING, BREAST, CERVICAL, CONTACTED, DUE, FIRST_SCREENING, LOST, NOT_RECORDED,
                             OPEN_STATES, POST_TREATMENT, RECEIVED, RESCHEDULED, RESCREENING, CONTACT_METHOD,
                             FOLLOWUP_PURPOSE, LOST_REASON, BadCode)
from ..pathway.rules import Pathway, Proposal
from .core import StoreCore
from .exams import Exams
from .fields import day_bound, later_than, public, text
from .followups import FollowupProblem, Followups, checked_followup, due_day
from .patients import Patients
from .referrals import OTHER_FACILITY, ReferralProblem, Referrals, checked_outcome, checked_referral
from .visits import CONTENT, DuplicateVisit, VisitProblem, Visits, checked_visit
from .vocabulary import AWAITING as EXAM_AWAITING

PROPOSE, KEEP = "propose", "keep"
NOTE_MAX = 1000
TZ_CLASSES = ("type_1", "type_2", "type_3")


def _today(today: date | None) -> date:
    return today or clock.today()


def _not_found(message: str, hint: str) -> NotFound:
    return translatable(NotFound)(message, hint)


class Care:
    def __init__(self, core: StoreCore, patients: Patients, exams: Exams, visits: Visits, referrals: Referrals,
                 followups: Followups, pathway: Callable[[], Pathway]):
        self._core = core
        self._patients = patients
        self._exams = exams
        self._visits = visits
        self._referrals = referrals
        self._followups = followups
        self._pathway = pathway
        self._cells: dict[tuple, tuple] = {}          # one object per distinct visit cell

    @property
    def pathway(self) -> Pathway:
        """The rules table and the referral facilities in use."""
        return self._pathway()

    # --- the exams of a visit ------------------------------------------------------------------

    def _patient_row(self, patient_uuid):
        row = self._patients.index.by_uuid.get(patient_uuid) if isinstance(patient_uuid, str) else None
        if row is None:
            raise _not_found(N_("The woman of this visit is not registered."), N_("Register or choose her first."))
        return row

    def _exam_row(self, exam_uuid: str, patient_uuid: str):
        row = self._exams.index.by_uuid.get(exam_uuid)
        if row is None or row.patient_uuid != patient_uuid:
            raise VisitProblem(N_("The visit names an exam that is not one of this woman's exams."),
                               N_("Choose her exams again."))
        return row

    def _with_exams(self, fields: dict, patient_uuid: str) -> dict:
        """The visit's answers with what its exams say: cytology from the latest Pap smear exam,
        the transformation zone from the latest cervix type exam (the model's class and, once
        decided, the clinician's), and whether a trained model read any of them."""
        out = dict(fields)
        rows = [self._exam_row(uuid, patient_uuid) for uuid in (fields.get("exam_uuids") or [])
                if isinstance(uuid, str)]
        cytology = dict(out.get("cytology") or {})
        colposcopy = dict(out.get("colposcopy") or {})
        paps = sorted((r for r in rows if r.analysis == "pap_smear"), key=lambda r: r.key)
        cervix = sorted((r for r in rows if r.analysis == "cervix_type"), key=lambda r: r.key)
        if paps:
            cytology.update(exam_uuid=paps[-1].uuid, result=cytology_result(paps[-1]))
        if cervix:
            exam = cervix[-1]
            decided = exam.final_label if exam.decision != EXAM_AWAITING and exam.final_label in TZ_CLASSES else None
            colposcopy.update(exam_uuid=exam.uuid, model_tz=exam.label if exam.label in TZ_CLASSES else None,
                              clinician_tz=decided)
            if decided:
                colposcopy["tz_type"] = decided
        out["cytology"], out["colposcopy"] = cytology, colposcopy
        out["model_assisted"] = any(r.analysis in ("pap_smear", "cervix_type") and not r.demo for r in rows)
        return out

    def visit_form(self, patient_uuid: str, exam_uuids: list[str] | tuple = (), *, today: date | None = None) -> dict:
        """A new visit's answers for the kiosk: every answer "not done" / "unknown", the exams'
        results filled in, the checklist pre-filled from the cervix type exam (marked as a
        suggestion, unconfirmed), and ``suggestions`` the nurse may accept (visit type and HIV
        status from her earlier visits: shown, never saved unless she confirms them)."""
        with self._core.reading():
            self._patient_row(patient_uuid)
            fields = self._with_exams({"date": _today(today).isoformat(), "exam_uuids": list(exam_uuids)}, patient_uuid)
            earlier = sorted(self._visits.index.by_patient.get(patient_uuid, ()), key=lambda r: r.key)
        form = checked_visit(fields, today=_today(today))
        colposcopy = form["colposcopy"]
        form["eligibility"] = checklist.prefill(colposcopy["model_tz"], colposcopy["clinician_tz"])
        last = earlier[-1] if earlier else None
        suggestions = {"visit_type": FIRST_SCREENING if last is None else
                       POST_TREATMENT if last.treated_on else RESCREENING,
                       "hiv_status": last.hiv if last is not None and last.hiv != "unknown" else None,
                       "hiv_status_from": last.date if last is not None and last.hiv != "unknown" else None}
        return {"visit": form, "suggestions": suggestions, "facilities": [f.__dict__ for f in self.pathway.facilities]}

    def propose(self, visit: dict, *, referred: bool = False, base_day: str | None = None) -> Proposal | None:
        """The next visit the rules table proposes for a checked visit (``base_day``: the day it
        counts from; the visit's, or the treatment's when she was treated later)."""
        situation = outcomes.situation(visit, referred)
        day = base_day or (visit["treatment"]["date"] if situation == "treated" else visit["date"])
        return self.pathway.propose(situation, visit["hiv_status"], day)

    # --- visits ----------------------------------------------------------------------------

    def save_visit(self, visit: dict, *, by: str | None, follow_up=PROPOSE, referral: dict | None = None,
                   allow_duplicate: bool = False, today: date | None = None) -> dict:
        """Save a new visit, with its referral (``referral``: the referral's answers) and its next
        visit: ``follow_up`` "propose" (the rules table's date), None (none), or {"due_date",
        "purpose"} (the date the nurse chose). Her follow-ups still open are closed as attended
        by this visit. A second visit of hers on the same day at this post is refused
        (``DuplicateVisit``, carrying the first) unless ``allow_duplicate``.

        Returns {"visit", "referral", "followup", "closed_followups"}."""
        if not isinstance(visit, dict):
            raise VisitProblem(N_("The visit must be a set of answers."), N_("Fill in the visit again."))
        unknown = set(visit) - set(CONTENT) - {"patient_uuid"}
        if unknown:
            raise VisitProblem(N_("The visit has an unknown answer %(key)r."), N_("Fill in the visit again."),
                               key=sorted(unknown)[0])
        day = _today(today)
        patient_uuid = visit.get("patient_uuid")
        with self._core.reading():
            self._patient_row(patient_uuid)
            content = checked_visit(self._with_exams(visit, patient_uuid), today=day)
        referral_content = self._referral_content(referral, content, patient_uuid, today=day) if referral else None
        follow = self._follow_up_plan(follow_up, content, referred=referral is not None)
        with self._core.writing():
            patient = self._patient_row(patient_uuid)
            if not allow_duplicate:
                existing = self._visits.on_day(patient.uuid, content["date"], self._core.post_id)
                if existing is not None:
                    raise DuplicateVisit(existing)
            record = self._core.new_record({"created_by": by, "patient_uuid": patient.uuid,
                                            "patient_pid": patient.pid, **content})
            self._visits.insert(record)
            self._core.audit(by, "visit.save", "visit", record["uuid"],
                             {"patient": patient.uuid, "date": content["date"], "type": content["visit_type"]})
            saved_referral = None
            if referral_content is not None:
                saved_referral = self._insert_referral({**referral_content, "visit_uuid": record["uuid"]}, patient, by)
            closed = self._close_open(patient.uuid, record["uuid"], by, CERVICAL)
            saved_followup = None
            if follow is not None:
                saved_followup = self._insert_followup(patient, record["uuid"], follow, by,
                                                       referral_uuid=(saved_referral or {}).get("uuid"),
                                                       not_before=content["date"])
            return {"visit": public(record), "referral": saved_referral, "followup": saved_followup,
                    "closed_followups": closed}

    def _follow_up_plan(self, follow_up, content: dict, *, referred: bool, base_day: str | None = None) -> dict | None:
        """What the follow-up will be: {due_date, purpose, proposed_date, rule} or None."""
        if follow_up is None:
            return None
        proposal = self.propose(content, referred=referred, base_day=base_day)
        not_before = base_day or content["date"]
        if follow_up == PROPOSE:
            if proposal is None or proposal.due_date is None:
                return None
            return {"due_date": proposal.due_date, "purpose": proposal.purpose, "proposed_date": proposal.due_date,
                    "rule": proposal.rule}
        if not isinstance(follow_up, dict) or set(follow_up) - {"due_date", "purpose"}:
            raise FollowupProblem(N_("The next visit must be a date and its purpose."), N_("Choose the date again."))
        due = due_day(follow_up.get("due_date"), not_before=not_before)
        try:
            purpose = FOLLOWUP_PURPOSE.check(follow_up.get("purpose") or (proposal.purpose if proposal else None))
        except BadCode as exc:
            raise FollowupProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
        return {"due_date": due, "purpose": purpose,
                "proposed_date": proposal.due_date if proposal else None, "rule": proposal.rule if proposal else None}

    def _insert_followup(self, patient, visit_uuid: str | None, plan: dict, by, *, referral_uuid=None,
                         not_before: str, programme: str = CERVICAL) -> dict:
        now = self._core.new_record({})["created_at"]
        content = checked_followup({"programme": programme, "visit_uuid": visit_uuid, "referral_uuid": referral_uuid,
                                    "purpose": plan["purpose"], "due_date": plan["due_date"],
                                    "proposed_date": plan.get("proposed_date"), "rule": plan.get("rule"),
                                    "state": DUE, "events": [{"action": "created", "at": now, "by": by,
                                                              "due_date": plan["due_date"]}]},
                                   visit_day=not_before)
        record = self._core.new_record({"created_by": by, "patient_uuid": patient.uuid, "patient_pid": patient.pid,
                                        **content})
        self._followups.insert(record)
        self._core.audit(by, "followup.create", "followup", record["uuid"],
                         {"patient": patient.uuid, "due_date": plan["due_date"], "purpose": plan["purpose"],
                          "proposed_date": plan.get("proposed_date")})
        return public(record)

    def _close_open(self, patient_uuid: str, visit_uuid: str, by, programme: str) -> list[str]:
        """Mark her open follow-ups of ``programme`` attended by this visit (under the writer lock)."""
        closed = []
        for row in list(self._followups.index.by_patient.get(patient_uuid, ())):
            if row.open and row.programme == programme:
                self._apply(row, {"action": ATTENDED, "visit_uuid": visit_uuid}, by)
                closed.append(row.uuid)
        return closed

    def update_visit(self, uuid: str, changes: dict, *, by: str | None, follow_up=KEEP,
                     today: date | None = None) -> dict:
        """Change answers of a saved visit (a lab's HPV result, a biopsy exam, the treatment).
        The whole visit is checked again; the earlier version is kept in the store's history.
        ``follow_up``: "keep" (her follow-ups stay), "propose", None or {"due_date", "purpose"}:
        her open follow-ups are closed and the new one is made, counted from the treatment day
        when she was treated after the visit day."""
        if not isinstance(changes, dict) or set(changes) - set(CONTENT) or "date" in changes:
            raise VisitProblem(N_("Only the answers of a visit can be changed, not its day."),
                               N_("Record a new visit for another day."))
        day = _today(today)
        with self._core.reading():
            row = self._visits.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if row is None:
                raise _not_found(N_("This visit is not in the records."), N_("Open it again from her page."))
            current = self._visits.get(uuid)
            merged = {k: current.get(k) for k in CONTENT}
            merged.update(changes)
            content = checked_visit(self._with_exams(merged, current["patient_uuid"]), today=day)
            referred = bool(self._referrals.index.by_visit.get(uuid))
        base = content["treatment"]["date"] if outcomes.treated(content) else None
        follow = self._follow_up_plan(follow_up, content, referred=referred, base_day=base) if follow_up != KEEP else None
        with self._core.writing():
            row = self._visits.index.by_uuid[uuid]
            record = dict(self._visits.stored(row))
            before = {k: record.get(k) for k in CONTENT}
            if before == content:
                return {"visit": public(record), "followup": None, "closed_followups": []}
            self._core.keep_version("visits", record, "visit changed")
            record.update(content, updated_at=later_than(record.get("updated_at")), updated_by=by)
            self._visits.replace(row, record)
            self._core.audit(by, "visit.update", "visit", uuid,
                             {"changed": sorted(k for k in CONTENT if before.get(k) != content.get(k))})
            closed, saved = [], None
            if follow_up != KEEP:
                patient = self._patient_row(record["patient_uuid"])
                closed = self._close_open(patient.uuid, uuid, by, CERVICAL)
                if follow is not None:
                    saved = self._insert_followup(patient, uuid, follow, by, not_before=base or content["date"])
            return {"visit": public(record), "followup": saved, "closed_followups": closed}

    def record_treatment(self, visit_uuid: str, treatment: dict, *, by: str | None, follow_up=PROPOSE,
                         today: date | None = None) -> dict:
        """Record her treatment on the visit whose positive screen it treats, the same day or at a
        later visit (``treatment["date"]``); the next visit is proposed from the treatment day."""
        return self.update_visit(visit_uuid, {"treatment": treatment}, by=by, follow_up=follow_up, today=today)

    # --- referrals --------------------------------------------------------------------------

    def _facility(self, referral: dict) -> dict:
        fid = referral.get("facility_id")
        if fid == OTHER_FACILITY or (fid in (None, "") and referral.get("facility_name")):
            return {"id": OTHER_FACILITY, "name": referral.get("facility_name"), "registry_code": ""}
        facility = self.pathway.facility(fid) if isinstance(fid, str) else None
        if facility is None:
            raise ReferralProblem(N_("The facility %(facility)r is not on the list of referral facilities."),
                                  N_("Choose a facility from the list, or type the name of another one."),
                                  facility=fid)
        return {"id": facility.id, "name": facility.name, "registry_code": facility.registry_code}

    def _referral_content(self, referral: dict, visit: dict | None, patient_uuid: str, *, today: date,
                          exam_uuid: str | None = None) -> dict:
        if not isinstance(referral, dict) or set(referral) - {"facility_id", "facility_name", "reason", "urgency",
                                                              "note", "date", "programme"}:
            raise ReferralProblem(N_("The referral must say where, why and how urgently."),
                                  N_("Fill in the referral again."))
        fields = {"programme": referral.get("programme") or CERVICAL, "date": referral.get("date") or
                  (visit["date"] if visit else today.isoformat()), "facility": self._facility(referral),
                  "reason": referral.get("reason"), "urgency": referral.get("urgency"), "note": referral.get("note"),
                  # a stand-in until the visit's uuid exists: checked_referral needs a source
                  "visit_uuid": "00000000-0000-4000-8000-000000000000" if visit else None, "exam_uuid": exam_uuid}
        content = checked_referral(fields, today=today)
        if visit and content["date"] < visit["date"]:
            raise ReferralProblem(N_("The referral date is before the visit."), N_("Check the date."))
        return content

    def _insert_referral(self, content: dict, patient, by) -> dict:
        record = self._core.new_record({"created_by": by, "patient_uuid": patient.uuid, "patient_pid": patient.pid,
                                        **content})
        self._referrals.insert(record)
        self._core.audit(by, "referral.create", "referral", record["uuid"],
                         {"patient": patient.uuid, "facility": content["facility"]["id"], "reason": content["reason"]})
        return public(record)

    def refer(self, *, visit_uuid: str | None = None, exam_uuid: str | None = None, referral: dict,
              by: str | None, today: date | None = None) -> dict:
        """Refer her from a saved visit, or from an exam (a breast or cervical histopathology result)."""
        day = _today(today)
        with self._core.reading():
            visit = self._visits.get(visit_uuid) if visit_uuid else None
            if visit_uuid and visit is None:
                raise _not_found(N_("This visit is not in the records."), N_("Open it again from her page."))
            if visit is None:
                exam = self._exams.index.by_uuid.get(exam_uuid) if isinstance(exam_uuid, str) else None
                if exam is None:
                    raise _not_found(N_("This exam is not in the records."),
                                     N_("Open the exam again from the patient's page."))
                patient_uuid = exam.patient_uuid
                programme = BREAST if exam.analysis == "breast_histopathology" else CERVICAL
                referral = {"programme": programme, **referral}
            else:
                patient_uuid = visit["patient_uuid"]
        content = self._referral_content(referral, visit, patient_uuid, today=day,
                                         exam_uuid=exam_uuid if visit is None else None)
        with self._core.writing():
            patient = self._patient_row(patient_uuid)
            return self._insert_referral({**content, "visit_uuid": visit_uuid if visit else None}, patient, by)

    def record_referral_outcome(self, referral_uuid: str, outcome: dict, *, by: str | None,
                                today: date | None = None) -> dict:
        """What came back from the facility. Only an existing referral has an outcome; a changed
        outcome keeps the earlier one (``outcome_history``) and the earlier version (history)."""
        day = _today(today)
        with self._core.writing():
            row = self._referrals.index.by_uuid.get(referral_uuid) if isinstance(referral_uuid, str) else None
            if row is None:
                raise _not_found(N_("There is no referral to record this outcome on."),
                                 N_("Record the referral first, from her visit or exam."))
            record = dict(self._referrals.stored(row))
            if not isinstance(outcome, dict):
                raise ReferralProblem(N_("The referral outcome must be a set of answers."), N_("Fill it in again."))
            content = checked_outcome({k: v for k, v in outcome.items() if k not in ("by", "at")},
                                      referred_on=record["date"], today=day)
            if content["result_exam_uuid"]:
                exam = self._exams.index.by_uuid.get(content["result_exam_uuid"])
                if exam is None or exam.patient_uuid != record["patient_uuid"]:
                    raise ReferralProblem(N_("The hospital's result names an exam that is not one of her exams."),
                                          N_("Choose the exam again."))
            earlier = record.get("outcome") or {}
            if {k: earlier.get(k) for k in content} == content:
                return public(record)
            now = later_than(record.get("updated_at"))
            content.update(by=by, at=now)
            self._core.keep_version("referrals", record, "outcome recorded")
            if earlier.get("status") not in (None, "pending") or earlier.get("by"):
                record["outcome_history"] = [*(record.get("outcome_history") or []), earlier]
            record.update(outcome=content, updated_at=now, updated_by=by)
            self._referrals.replace(row, record)
            self._core.audit(by, "referral.outcome", "referral", referral_uuid,
                             {"status": content["status"], "previous": earlier.get("status")})
            return public(record)

    # --- follow-ups --------------------------------------------------------------------------

    def schedule_followup(self, patient_uuid: str, *, due_date, purpose: str, by: str | None,
                          visit_uuid: str | None = None, referral_uuid: str | None = None,
                          programme: str = CERVICAL, today: date | None = None) -> dict:
        """A follow-up the nurse sets by hand (after a referral's outcome, a breast result)."""
        day = _today(today).isoformat()
        with self._core.writing():
            patient = self._patient_row(patient_uuid)
            not_before = day
            if visit_uuid:
                visit = self._visits.index.by_uuid.get(visit_uuid)
                if visit is None or visit.patient_uuid != patient.uuid:
                    raise _not_found(N_("This visit is not in the records."), N_("Open it again from her page."))
                not_before = visit.date
            return self._insert_followup(patient, visit_uuid, {"due_date": due_date, "purpose": purpose}, by,
                                         referral_uuid=referral_uuid, not_before=not_before, programme=programme)

    def followup_action(self, uuid: str, action: str, *, by: str | None, note: str = "", method: str | None = None,
                        due_date=None, reason: str | None = None, visit_uuid: str | None = None) -> dict:
        """Record what happened to a follow-up: ``contacted`` (``method``: phone…, a ``note``),
        ``rescheduled`` (a new ``due_date``), ``attended`` (``visit_uuid`` if she had a visit),
        ``lost`` (a ``reason``: lost is never silence), or ``reopened`` (a closed one opened again)."""
        with self._core.writing():
            row = self._followups.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if row is None:
                raise _not_found(N_("This follow-up is not in the records."), N_("Open her page again."))
            event = {"action": action, "note": note, "method": method, "due_date": due_date, "reason": reason,
                     "visit_uuid": visit_uuid}
            return self._apply(row, event, by)

    def _apply(self, row, event: dict, by) -> dict:
        action = event.get("action")
        record = dict(self._followups.stored(row))
        state = record.get("state")
        if action not in (CONTACTED, RESCHEDULED, ATTENDED, LOST, "reopened"):
            raise FollowupProblem(N_("%(action)r is not something that can happen to a follow-up."),
                                  N_("Choose contacted, rescheduled, attended or lost to follow-up."), action=action)
        if action == "reopened" and state in OPEN_STATES:
            raise FollowupProblem(N_("This follow-up is still open."), N_("Record what happened instead."))
        if action != "reopened" and state not in OPEN_STATES:
            raise FollowupProblem(N_("This follow-up is closed already (%(state)s)."),
                                  N_("Reopen it first if she is expected again."), state=state)
        now = later_than(record.get("updated_at"))
        new = {"action": action, "at": now, "by": by}
        note = text(event.get("note"), "note", max_len=NOTE_MAX, multiline=True)
        if note:
            new["note"] = note
        try:
            if action == CONTACTED:
                new["method"] = CONTACT_METHOD.check(event.get("method"))
            if action == LOST:
                new["reason"] = LOST_REASON.check(event.get("reason"))
                if new["reason"] == NOT_RECORDED:
                    raise FollowupProblem(N_("Lost to follow-up needs a reason."),
                                          N_("Choose why she is lost to follow-up."))
        except BadCode as exc:
            raise FollowupProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
        not_before = self._source_day(record)
        if action == RESCHEDULED or (action == "reopened" and event.get("due_date")):
            if not event.get("due_date"):
                raise FollowupProblem(N_("Rescheduling needs the new date."), N_("Choose the new day."))
            new["due_date"] = due_day(event["due_date"], not_before=not_before)
            record["due_date"] = new["due_date"]
        if action == ATTENDED and event.get("visit_uuid"):
            visit = self._visits.index.by_uuid.get(event["visit_uuid"])
            if visit is None or visit.patient_uuid != record.get("patient_uuid"):
                raise _not_found(N_("This visit is not in the records."), N_("Open it again from her page."))
            new["visit_uuid"] = visit.uuid
        self._core.keep_version("followups", record, f"follow-up {action}")
        record["events"] = [*(record.get("events") or []), new]
        record.update(state=DUE if action == "reopened" else action, updated_at=now, updated_by=by,
                      lost_reason=new.get("reason") if action == LOST else None)
        self._followups.replace(row, record)
        self._core.audit(by, f"followup.{action}", "followup", row.uuid,
                         {k: new[k] for k in ("due_date", "method", "reason", "visit_uuid") if k in new})
        return public(record)

    def _source_day(self, record: dict) -> str:
        visit = self._visits.index.by_uuid.get(record.get("visit_uuid") or "")
        return visit.date if visit is not None else record.get("created_at", "1900-01-01")[:10]

    def followup_list(self, *, today: date | None = None, post_id: str | None = None, limit: int = 20,
                      week_days: int = 7) -> dict:
        """The home screen's list: follow-ups overdue (open, due before today: the longest waiting
        first), due this week (today and the next ``week_days - 1`` days) and referrals without an
        outcome (the oldest first). Each with its total and the first ``limit`` items (name, card
        number, phone, due day, days late, purpose, state, contacts so far)."""
        day = _today(today)
        low, high = day.isoformat(), (day + timedelta(days=week_days - 1)).isoformat()
        limit = max(0, min(int(limit), 200))
        with self._core.reading():
            open_rows = self._followups.index.open_rows
            overdue = [r for r in open_rows.between(None, (day - timedelta(days=1)).isoformat())
                       if post_id is None or r.post_id == post_id]
            this_week = [r for r in open_rows.between(low, high) if post_id is None or r.post_id == post_id]
            pending = [r for r in self._referrals.index.pending.rows() if post_id is None or r.post_id == post_id]
            return {"today": low, "week_ends": high,
                    "overdue": {"count": len(overdue), "items": [self._followup_item(r, day) for r in overdue[:limit]]},
                    "due_this_week": {"count": len(this_week),
                                      "items": [self._followup_item(r, day) for r in this_week[:limit]]},
                    "referrals_pending": {"count": len(pending),
                                          "items": [self._referral_item(r, day) for r in pending[:limit]]}}

    def _who(self, patient_uuid: str) -> dict:
        row = self._patients.index.by_uuid.get(patient_uuid)
        if row is None:
            return {"name": "", "phone": ""}
        patient = self._patients.stored(row)
        return {"name": patient.get("full_name", ""), "phone": patient.get("phone", "")}

    def _followup_item(self, row, day: date) -> dict:
        return {"uuid": row.uuid, "patient_uuid": row.patient_uuid, "pid": row.patient_pid, **self._who(row.patient_uuid),
                "due_date": row.due_date, "days_late": max(0, (day - date.fromisoformat(row.due_date)).days),
                "purpose": row.purpose, "state": row.state, "contacts": row.contacts,
                "last_event_at": row.last_event_at, "visit_uuid": row.visit_uuid or None, "programme": row.programme}

    def _referral_item(self, row, day: date) -> dict:
        record = self._referrals.stored(row)
        return {"uuid": row.uuid, "patient_uuid": row.patient_uuid, "pid": row.patient_pid,
                **self._who(row.patient_uuid), "date": row.date,
                "days_since": (day - date.fromisoformat(row.date)).days, "facility": (record.get("facility") or {}).get("name"),
                "reason": row.reason, "urgency": record.get("urgency"), "visit_uuid": row.visit_uuid or None,
                "programme": row.programme}

    # --- her record -------------------------------------------------------------------------

    def for_patient(self, patient_uuid: str) -> dict:
        """Her visits (newest first), referrals and follow-ups, for her page."""
        return {"visits": self._visits.for_patient(patient_uuid),
                "referrals": self._referrals.for_patient(patient_uuid),
                "followups": self._followups.for_patient(patient_uuid)}

    # --- indicators ---------------------------------------------------------------------------

    def indicators(self, *, date_from=None, date_to=None, post_id: str | None = None, today: date | None = None,
                   group_of: Callable[[str, str], object] | None = None) -> tuple:
        """The programme's indicators (``appliance.pathway.indicators``): (totals, groups) as
        ``Figures``; ``group_of(post_id, day)`` groups them (by post, by DHIS2 period…)."""
        low = (day_bound(date_from, "start date", end=False) or "")[:10] or None
        high = (day_bound(date_to, "end date", end=True) or "")[:10] or None
        day = _today(today)
        yesterday = (day - timedelta(days=1)).isoformat()

        def mine(rows):
            return rows if post_id is None else [r for r in rows if r.post_id == post_id]

        with self._core.reading():
            visits = self._visits.index
            exams = self._exams.index.by_uuid
            in_period = mine(visits.between(low, high))
            treated = mine([r for r in visits.ordered.rows() if r.treated_on])
            referrals = mine(self._referrals.index.ordered.between(low, high) if (low or high)
                             else self._referrals.index.ordered.rows())
            elsewhere = [r.visit_uuid for r in mine(self._referrals.index.ordered.rows()) if r.treated and r.visit_uuid]
            followups = mine(self._followups.index.ordered.between(low, min(high or yesterday, yesterday)))
            age_at = self._patients.index.age_at
            cells = self._cells

            def cell_of(row):
                cell = row.cell
                if cell is not None:
                    return cell
                if row.age is None:
                    found = age_at(row.patient_uuid, row.date)
                    row.age = -1 if found is None else found
                cytology = row.cytology
                if row.cytology_exam:
                    exam = exams.get(row.cytology_exam)
                    cytology = cytology_result(exam) if exam is not None else row.cytology
                cell = pathway_indicators.visit_cell(row, cytology, None if row.age < 0 else row.age)
                cell = cells.setdefault(cell, cell)
                if not row.cytology_exam:            # a Pap smear's decision may change: counted anew
                    row.cell = cell
                return cell

            return pathway_indicators.compute(
                in_period, treated=treated, referrals=referrals, followups=followups, cell_of=cell_of,
                visits_of=lambda patient: visits.by_patient.get(patient, ()), visit_row=visits.by_uuid.get,
                treated_elsewhere=dict.fromkeys(elsewhere), today=day, date_from=low, date_to=high,
                group_of=group_of)

    def summary(self, *, date_from=None, date_to=None, post_id: str | None = None, today: date | None = None,
                by_post: bool = False) -> dict:
        """The indicators as JSON (``appliance stats --json``, the supervisor's tables): each with
        its numerator, denominator and percent; ``by_post`` adds them per health post."""
        day = _today(today)
        total, groups = self.indicators(date_from=date_from, date_to=date_to, post_id=post_id, today=day,
                                        group_of=(lambda post, _day: post) if by_post else None)
        out = pathway_indicators.as_json(total, date_from=date_from, date_to=date_to, today=day)
        if by_post:
            out["by_post"] = {post: figures.to_json() for post, figures in sorted(groups.items())}
        return out


def cytology_result(exam_row) -> str:
    """A Pap smear exam's answer for the visit: the clinician's class, awaiting, or not readable."""
    if exam_row.decision == EXAM_AWAITING:
        return AWAITING
    if catalogue.is_referral(exam_row.final_label):
        return "inadequate"
    return exam_row.final_label if exam_row.final_label in ("normal", "abnormal") else "inadequate"
