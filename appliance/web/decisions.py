"""The clinician's decision on the result page: which choices it offers, and what a choice records.

A plain result offers the one-tap "Agree: <class>". A result the model is not sure of puts
"Uncertain — refer for a second opinion" first, and its agree choice says the model is not
confident. An image flagged out of scope (it does not look like what the model was trained on)
is never agreed to in one tap: its class is meaningless, so the page offers "Retake the image"
and "Image not suitable — retake or refer"; a clinician who can read the image anyway picks the
class under "Another class". Referrals are decision values of the catalogue (``REFERRALS``),
never model classes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import catalogue
from ..errors import UserError
from . import views
from .request import _

AGREE, OTHER = "yes", "no"


@dataclass(frozen=True)
class Choice:
    value: str          # the form's "agrees" value: "yes", "no", or a referral id
    text: str


def flagged(exam: dict) -> bool:
    return bool(((exam.get("result") or {}).get("out_of_scope") or {}).get("flagged"))


def uncertain(exam: dict) -> bool:
    return bool((exam.get("result") or {}).get("uncertain"))


def shortcuts(exam: dict) -> list[Choice]:
    """The one-tap choices above "Another class", most advisable first."""
    label = views.label_name(exam["analysis"], exam.get("label"))
    if flagged(exam):
        return [Choice("not_suitable", _("Image not suitable — retake or refer"))]
    if uncertain(exam):
        return [Choice("refer", _("Uncertain — refer for a second opinion")),
                Choice(AGREE, _("Agree: %(label)s (the model is not confident)", label=label))]
    return [Choice(AGREE, _("Agree: %(label)s", label=label))]


def form(exam: dict) -> dict:
    """What the decision form shows: the shortcuts, the other choices, and which one is ticked."""
    analysis = catalogue.analysis(exam["analysis"])
    quick = shortcuts(exam)
    decided = (exam.get("decision") or {}).get("label")
    checked = None
    if decided is not None:
        checked = OTHER
        for choice in quick:
            if decided == choice.value or (choice.value == AGREE and decided == exam.get("label")):
                checked = choice.value
                break
    return {"shortcuts": quick, "checked": checked, "decided": decided,
            "classes": [(c.id, _(c.name)) for c in analysis.label_classes()],
            "referrals": [(c.id, _(c.name)) for c in catalogue.REFERRALS]}


def chosen_label(exam: dict, choice: str, other: str) -> str:
    """The label a submitted decision records; UserError for a choice the page does not offer."""
    if choice == AGREE:
        if flagged(exam):
            raise UserError(_("This image does not look like the images the model was trained on: its class "
                              "cannot be agreed to in one tap."),
                            _("Tap “Retake the image”, “Image not suitable”, or choose the class you see "
                              "under “Another class”."))
        return exam["label"]
    if catalogue.is_referral(choice):
        return choice
    if choice == OTHER:
        if other not in catalogue.all_decision_ids()[exam["analysis"]]:
            raise UserError(_("Choose the class you found."), _("Tap one of the classes under “Another class”."))
        return other
    raise UserError(_("Choose whether you agree with the result."), _("Tap “Agree” or “Another class”."))


def retake_advised(exam: dict) -> bool:
    """The image itself may be the problem: out of scope, uncertain, or with quality warnings."""
    quality = (exam.get("result") or {}).get("quality") or {}
    return flagged(exam) or uncertain(exam) or bool(quality.get("warnings"))
