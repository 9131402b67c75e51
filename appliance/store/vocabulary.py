"""The store's words: user roles, an exam's state and its decision, and which class a labelled
dataset may file an exam under. One definition, for records, statistics, exports, the image
library, the kiosk and the command line.
"""
from __future__ import annotations

from .. import catalogue
from ..i18n import N_

# What an account may be (docs/ARCHITECTURE.md "Roles" says what each may do).
ROLES = ("nurse", "doctor", "supervisor", "admin")

# A record's ``status`` is AWAITING or DECIDED; its decision is AWAITING, AGREES, DISAGREES or
# REFERRED (the clinician gave no class: image not suitable, or refer for a second opinion).
AWAITING, DECIDED = "awaiting_decision", "decided"
AGREES, DISAGREES, REFERRED = "agrees", "disagrees", "referred"
STATUSES = (AWAITING, DECIDED)
# What the kiosk calls each decision (English source strings, translated where shown).
DECISION_NAMES = {AWAITING: N_("Awaiting decision"), AGREES: N_("Clinician agrees with the model"),
                  DISAGREES: N_("Clinician chose another class"), REFERRED: N_("Referred without a class")}


def decision_of(record: dict) -> str:
    """An exam record's decision: AWAITING, AGREES, DISAGREES or REFERRED."""
    decision = record.get("decision")
    if not decision:
        return AWAITING
    if catalogue.is_referral(decision.get("label")):
        return REFERRED
    return AGREES if decision.get("agrees") else DISAGREES


def research_label(analysis: str, final_label, decision: str, demo: bool) -> str | None:
    """The class a labelled dataset (the image library's ``confirmed`` folders, research exports)
    may file an exam's image under: the clinician's class of a decided exam made with trained
    models. None for a result still awaiting a decision (the model's label is a guess, uncertain
    and out-of-scope ones included: training on it would feed a model its own guesses), for an
    exam made with demo models, and for a decision without a class (a referral). ``decision`` is
    :func:`decision_of`'s value."""
    if demo or decision == AWAITING or final_label not in catalogue.all_label_ids().get(analysis, ()):
        return None
    return final_label
