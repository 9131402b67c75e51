"""The store's figures (``Store.stats``): counts over the exams' and the patients' indexes."""
from __future__ import annotations

from .core import StoreCore
from .exams import Exams
from .fields import day_bound, utc_now
from .patients import Patients


class Statistics:
    def __init__(self, core: StoreCore, exams: Exams, patients: Patients):
        self._core = core
        self._exams = exams
        self._patients = patients

    def stats(self, *, date_from=None, date_to=None, include_demo: bool = False, post_id: str | None = None) -> dict:
        """Counts for the dashboard, ``appliance stats`` and the DHIS2/CSV outputs.

        Prevalence comes from clinicians' decisions only. Exams made with demo (untrained) models
        are left out of every figure and counted apart in ``demo_exams`` (``include_demo`` counts
        them like the others); an exam without a decision is counted in ``awaiting_decision``,
        never under the model's class.

        ``exams``: exams in the period (demo left out) = ``decided`` (with a class) +
        ``awaiting_decision`` + ``referred`` (decided without a class); ``demo_exams``;
        ``patients`` (registered in the period); ``patients_examined``; ``by_analysis``
        ({analysis: exams}); ``awaiting_by_analysis``; ``by_class`` ({analysis: {final class:
        decided exams}}: the prevalence figures); ``by_month``; ``by_decision`` (awaiting_decision /
        agrees / disagrees); ``by_post``; ``by_age_group`` (age at the exam); ``cells`` (every
        exam, demo ones included, by post, month, analysis, class, decision, age group and demo
        flag, for exports).
        """
        low, high = day_bound(date_from, "start date", end=False), day_bound(date_to, "end date", end=True)
        with self._core.reading():
            out = self._exams.index.stats(low, high, include_demo=bool(include_demo), post_id=post_id)
            recent = self._patients.index.recent
            if post_id is None:
                out["patients"] = len(recent.between(low, high)) if (low or high) else len(recent)
            else:         # one health post's figures only
                rows = recent.between(low, high) if (low or high) else recent.rows()
                out["patients"] = sum(1 for r in rows if r.post_id == post_id)
        out.update(post_id=self._core.post_id, post_name=self._core.post_name, date_from=low, date_to=high,
                   generated_at=utc_now())
        return out
