"""The home screen's follow-up list over simulated time, what a nurse records on each item, and
the rules table an admin adapts."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from appliance.errors import UserError
from appliance.pathway import rules

from pathway_support import checklist, save
from test_store_support import register

DAY = date(2026, 3, 12)


def listed(store, today, section="overdue"):
    return [item["pid"] for item in store.care.followup_list(today=today)[section]["items"]]


def test_the_list_follows_time_and_every_action(store):
    almaz = register(store, "JU-1", "Almaz Tadesse", phone="0911223344")
    hana = register(store, "JU-2", "Hana Bekele")
    tigist = register(store, "JU-3", "Tigist Alemu")
    a = save(store, almaz, DAY, via="negative", follow_up={"due_date": "2026-06-01"})["followup"]
    h = save(store, hana, DAY, via="negative", follow_up={"due_date": "2026-06-04"})["followup"]
    t = save(store, tigist, DAY, via="negative", follow_up={"due_date": "2026-06-20"})["followup"]

    assert store.care.followup_list(today=date(2026, 5, 1))["overdue"]["count"] == 0
    assert listed(store, date(2026, 5, 29), "due_this_week") == ["JU-1", "JU-2"]   # 29 May - 4 June
    on_day = store.care.followup_list(today=date(2026, 6, 1))
    assert [i["pid"] for i in on_day["due_this_week"]["items"]] == ["JU-1", "JU-2"]
    assert on_day["due_this_week"]["items"][0]["name"] == "Almaz Tadesse"
    assert on_day["due_this_week"]["items"][0]["phone"] == "+251911223344"

    later = date(2026, 6, 10)
    late = store.care.followup_list(today=later)
    assert [i["pid"] for i in late["overdue"]["items"]] == ["JU-1", "JU-2"]       # the longest waiting first
    assert late["overdue"]["items"][0]["days_late"] == 9

    # A phone call keeps it on the list (still open), with the contact counted.
    store.care.followup_action(a["uuid"], "contacted", method="phone", note="will come on Monday", by="nurse1")
    item = store.care.followup_list(today=later)["overdue"]["items"][0]
    assert item["state"] == "contacted" and item["contacts"] == 1
    # Rescheduled: off the overdue list, back on the week's list when its day comes.
    store.care.followup_action(a["uuid"], "rescheduled", due_date="2026-06-15", by="nurse1")
    assert listed(store, later) == ["JU-2"] and listed(store, later, "due_this_week") == ["JU-1"]
    # Lost to follow-up is said, with a reason, never silence: off the list, counted by the indicator.
    store.care.followup_action(h["uuid"], "lost", reason="moved", note="moved to Addis", by="nurse1")
    assert listed(store, later) == []
    assert store.followups.get(h["uuid"])["lost_reason"] == "moved"
    # Attended (she came): closed.
    store.care.followup_action(t["uuid"], "attended", by="nurse1")
    assert listed(store, date(2026, 7, 1)) == ["JU-1"]
    # Her new visit closes the last one.
    save(store, almaz, date(2026, 7, 2), visit_type="rescreening", via="negative")
    assert store.followups.get(a["uuid"])["state"] == "attended"
    assert listed(store, date(2026, 7, 3)) == []
    events = [e["action"] for e in store.followups.get(a["uuid"])["events"]]
    assert events == ["created", "contacted", "rescheduled", "attended"]
    assert [v["state"] for v in store.history.versions(a["uuid"])] == ["due", "contacted", "rescheduled"]


def test_referrals_without_an_outcome_are_on_the_list_until_it_comes(store):
    woman = register(store)
    done = save(store, woman, DAY, via="suspicious", eligibility=checklist("refer", no=("no_cancer_suspicion",)),
                referral={"facility_name": "Jimma University Medical Center", "reason": "suspected_cancer"})
    pending = store.care.followup_list(today=DAY + timedelta(days=10))["referrals_pending"]
    assert pending["count"] == 1 and pending["items"][0]["days_since"] == 10
    assert pending["items"][0]["facility"] == "Jimma University Medical Center"
    store.care.record_referral_outcome(done["referral"]["uuid"], {"status": "not_attended"}, by="nurse1",
                                       today=DAY + timedelta(days=30))
    assert store.care.followup_list(today=DAY + timedelta(days=31))["referrals_pending"]["count"] == 0


@pytest.mark.parametrize("action, options, words", [
    ("lost", {}, "needs a reason"),
    ("rescheduled", {}, "needs the new date"),
    ("rescheduled", {"due_date": "2026-03-01"}, "before the visit"),
    ("contacted", {"method": "pigeon"}, "not a possible answer"),
    ("vanished", {}, "not something that can happen"),
    ("reopened", {}, "still open"),
])
def test_bad_follow_up_actions_change_nothing(store, action, options, words):
    woman = register(store)
    follow = save(store, woman, DAY, via="negative")["followup"]
    before = (store.followups.get(follow["uuid"]), store.change_seq())
    with pytest.raises(UserError) as refused:
        store.care.followup_action(follow["uuid"], action, by="nurse1", **options)
    assert words in refused.value.message
    assert (store.followups.get(follow["uuid"]), store.change_seq()) == before


def test_a_closed_follow_up_takes_no_action_but_can_be_reopened(store):
    woman = register(store)
    follow = save(store, woman, DAY, via="negative")["followup"]
    store.care.followup_action(follow["uuid"], "lost", reason="unreachable", by="nurse1")
    with pytest.raises(UserError, match="closed already"):
        store.care.followup_action(follow["uuid"], "contacted", by="nurse1")
    reopened = store.care.followup_action(follow["uuid"], "reopened", due_date="2026-12-01", by="nurse1")
    assert reopened["state"] == "due" and reopened["due_date"] == "2026-12-01" and reopened["lost_reason"] is None


# --- the rules table -----------------------------------------------------------------------------

def test_an_admins_table_replaces_the_rules_it_gives(store, cfg, tmp_path):
    (tmp_path / "pathway.toml").write_text(
        '[[rule]]\nid = "national_via"\nwhen = "via_or_cytology_negative"\nmonths = 24\npurpose = "rescreen"\n')
    cfg.pathway.rules_file = str(tmp_path / "pathway.toml")
    woman = register(store)
    follow = save(store, woman, DAY, via="negative")["followup"]
    assert (follow["due_date"], follow["rule"]) == ("2028-03-12", "national_via")
    assert store.care.pathway.source == tmp_path / "pathway.toml"


def test_the_table_beside_the_configuration_is_found(cfg, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")
    cfg.config_file = config
    assert rules.rules_path(cfg) == rules.BUILT_IN
    (tmp_path / "pathway.toml").write_text('[[facility]]\nid = "jumc"\nname = "JUMC"\n')
    assert rules.rules_path(cfg) == tmp_path / "pathway.toml"
    table = rules.load(cfg)
    assert [f.id for f in table.facilities] == ["jumc"] and table.rules == rules.load_built_in().rules


@pytest.mark.parametrize("text, words", [
    ('[[rule]]\nid = "x"\nwhen = "sometimes"\nmonths = 3\n', "when = 'sometimes' in [[rule]] number 1"),
    ('[[rule]]\nid = "x"\nwhen = "treated"\nmonths = -1\n', "months = -1"),
    ('[[rule]]\nid = "x"\nwhen = "treated"\nmonths = 12\nhiv = ["maybe"]\n', "hiv = ['maybe']"),
    ('[[rule]]\nid = "x"\nwhen = "treated"\nmonths = 12\ncolour = "red"\n', "unknown setting 'colour'"),
    ('[[rule]]\nwhen = "treated"\nmonths = 12\n', "needs a unique id"),
    ('[[facility]]\nid = "other"\nname = "X"\n', "not 'other'"),
    ('[wards]\n', "unknown section 'wards'"),
    ('[[rule]\n', "is not valid TOML"),
])
def test_a_bad_table_is_refused_with_the_rule_named(cfg, tmp_path, text, words):
    (tmp_path / "pathway.toml").write_text(text)
    cfg.pathway.rules_file = str(tmp_path / "pathway.toml")
    with pytest.raises(UserError) as refused:
        rules.load(cfg)
    assert words in refused.value.message and "pathway.toml" in refused.value.message


def test_months_are_added_as_calendar_months():
    assert rules.add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert rules.add_months(date(2027, 12, 15), 3) == date(2028, 3, 15)
    assert rules.add_months(date(2028, 2, 29), 12) == date(2029, 2, 28)
    assert rules.add_months(date(2026, 3, 12), -12) == date(2025, 3, 12)
