"""The catalogue of analyses: the one place that says what the appliance can analyse.

Everything else (engine, kiosk, store, statistics, exports, training) reads this module.
Display names are English source strings marked with ``N_`` so Babel extracts them;
the UI translates them at render time with ``gettext``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field


def N_(text: str) -> str:
    """Mark a string for translation without translating it now (gettext's N_ convention)."""
    return text


@dataclass(frozen=True)
class ClassInfo:
    id: str
    name: str


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    classes: tuple[ClassInfo, ...]
    # The image domain the model was trained on; the out-of-scope gate compares against it.
    domain: str

    @property
    def class_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.classes)

    def class_name(self, class_id: str) -> str:
        for c in self.classes:
            if c.id == class_id:
                return c.name
        raise KeyError(f"{self.id} has no class {class_id!r}")


@dataclass(frozen=True)
class CascadeRule:
    """After ``after_model`` predicts ``when_class``, run ``then_model`` on the same image."""
    after_model: str
    when_class: str
    then_model: str
    # A refining step narrows the label (benign -> fibroadenoma); a non-refining step adds
    # an attribute to it (ductal carcinoma -> grade 2) and does not change the label.
    refines_label: bool = True


@dataclass(frozen=True)
class Analysis:
    id: str
    name: str
    input_name: str
    first_model: str
    rules: tuple[CascadeRule, ...] = ()
    description: str = ""
    # Which capture sources suit this analysis (microscope camera, phone colposcope, file).
    sources: tuple[str, ...] = ("camera", "file")

    def next_model(self, model_id: str, class_id: str) -> CascadeRule | None:
        for rule in self.rules:
            if rule.after_model == model_id and rule.when_class == class_id:
                return rule
        return None

    @property
    def model_ids(self) -> tuple[str, ...]:
        ids = [self.first_model]
        for rule in self.rules:
            if rule.then_model not in ids:
                ids.append(rule.then_model)
        return tuple(ids)

    def label_of(self, path: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
        """The record's label from a cascade path of (model_id, class_id) steps.

        The label is the class of the deepest step that refines it; attribute steps
        (such as the grade) are ignored.
        """
        if not path:
            raise ValueError("empty cascade path")
        label = path[0][1]
        for (model_id, class_id), (next_model, next_class) in zip(path, path[1:]):
            rule = self.next_model(model_id, class_id)
            if rule is None or rule.then_model != next_model:
                raise ValueError(f"{next_model} does not follow {model_id}={class_id} in {self.id}")
            if rule.refines_label:
                label = next_class
        return label

    def label_classes(self) -> tuple[ClassInfo, ...]:
        """Every class a record of this analysis can be labelled with (clinician's choices)."""
        out: list[ClassInfo] = []
        attribute_models = {r.then_model for r in self.rules if not r.refines_label}
        for model_id in self.model_ids:
            if model_id in attribute_models:
                continue
            for c in MODELS[model_id].classes:
                if c not in out:
                    out.append(c)
        return tuple(out)

    def attribute_models(self) -> tuple[str, ...]:
        return tuple(r.then_model for r in self.rules if not r.refines_label)

    def decision_choices(self) -> tuple[ClassInfo, ...]:
        """What a clinician may record: a class of this analysis, or a referral (no class)."""
        return self.label_classes() + REFERRALS


def _classes(*pairs: tuple[str, str]) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(i, n) for i, n in pairs)


# Decisions that give no class: the image cannot be read (out of scope, unusable) or the
# result needs an expert. They are decision values only: never a model class, never in a
# model pack, never a training label (the image library files images under classes only).
REFERRALS = _classes(
    ("not_suitable", N_("Image not suitable — retake or refer")),
    ("refer", N_("Uncertain — refer for a second opinion")),
)
REFERRAL_IDS = frozenset(c.id for c in REFERRALS)


def is_referral(label) -> bool:
    """True for a decision that records a referral instead of a class."""
    return label in REFERRAL_IDS


HISTOPATHOLOGY = "he_histopathology"
CYTOLOGY = "pap_cytology"
COLPOSCOPY = "colposcopy"

_MODELS = (
    ModelSpec("breast_binary", N_("Breast: benign or malignant"), _classes(
        ("benign", N_("Benign")),
        ("malignant", N_("Malignant")),
    ), HISTOPATHOLOGY),
    ModelSpec("breast_benign_subtype", N_("Breast: benign subtype"), _classes(
        ("adenosis", N_("Adenosis")),
        ("fibroadenoma", N_("Fibroadenoma")),
        ("phyllodes_tumor", N_("Phyllodes tumor")),
        ("tubular_adenoma", N_("Tubular adenoma")),
    ), HISTOPATHOLOGY),
    ModelSpec("breast_malignant_subtype", N_("Breast: malignant subtype"), _classes(
        ("ductal_carcinoma", N_("Ductal carcinoma")),
        ("lobular_carcinoma", N_("Lobular carcinoma")),
        ("mucinous_carcinoma", N_("Mucinous carcinoma")),
        ("papillary_carcinoma", N_("Papillary carcinoma")),
    ), HISTOPATHOLOGY),
    ModelSpec("breast_grade", N_("Breast: grade of ductal carcinoma"), _classes(
        ("grade_1", N_("Grade 1")),
        ("grade_2", N_("Grade 2")),
        ("grade_3", N_("Grade 3")),
    ), HISTOPATHOLOGY),
    ModelSpec("cervix_histopathology", N_("Cervix: histopathology"), _classes(
        ("normal", N_("Normal")),
        ("precancer", N_("Precancer")),
        ("squamous_cell_carcinoma", N_("Squamous cell carcinoma")),
        ("adenocarcinoma", N_("Adenocarcinoma")),
    ), HISTOPATHOLOGY),
    ModelSpec("pap_smear", N_("Pap smear"), _classes(
        ("normal", N_("Normal")),
        ("abnormal", N_("Abnormal")),
    ), CYTOLOGY),
    ModelSpec("cervix_type", N_("Cervix type (transformation zone)"), _classes(
        ("type_1", N_("Type 1")),
        ("type_2", N_("Type 2")),
        ("type_3", N_("Type 3")),
    ), COLPOSCOPY),
)
MODELS: dict[str, ModelSpec] = {m.id: m for m in _MODELS}

_ANALYSES = (
    Analysis(
        id="breast_histopathology",
        name=N_("Breast histopathology"),
        input_name=N_("H&E-stained breast tissue under the microscope (40x-400x)"),
        first_model="breast_binary",
        rules=(
            CascadeRule("breast_binary", "benign", "breast_benign_subtype"),
            CascadeRule("breast_binary", "malignant", "breast_malignant_subtype"),
            CascadeRule("breast_malignant_subtype", "ductal_carcinoma", "breast_grade",
                        refines_label=False),
        ),
        description=N_("Benign or malignant, then the subtype; the grade for ductal carcinoma."),
    ),
    Analysis(
        id="cervical_histopathology",
        name=N_("Cervical histopathology"),
        input_name=N_("H&E-stained cervical tissue under the microscope"),
        first_model="cervix_histopathology",
        description=N_("Normal, precancer, squamous cell carcinoma or adenocarcinoma."),
    ),
    Analysis(
        id="pap_smear",
        name=N_("Pap smear"),
        input_name=N_("Pap-stained cervical cells under the microscope"),
        first_model="pap_smear",
        description=N_("Screening: normal or abnormal cells."),
    ),
    Analysis(
        id="cervix_type",
        name=N_("Cervix type (colposcopy)"),
        input_name=N_("Colposcope photo of the cervix after acetic acid"),
        first_model="cervix_type",
        description=N_("Transformation zone type 1, 2 or 3."),
        sources=("phone", "camera", "file"),
    ),
)
ANALYSES: dict[str, Analysis] = {a.id: a for a in _ANALYSES}


def analysis(analysis_id: str) -> Analysis:
    try:
        return ANALYSES[analysis_id]
    except KeyError:
        from .i18n import TranslatableError
        raise TranslatableError(N_("There is no analysis called %(name)r."), N_("Choose one of: %(known)s."),
                                name=analysis_id, known=", ".join(ANALYSES)) from None


def model(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        from .i18n import TranslatableError
        raise TranslatableError(N_("There is no model called %(name)r."), N_("Known models: %(known)s."),
                                name=model_id, known=", ".join(MODELS)) from None


def analysis_of_model(model_id: str) -> Analysis:
    for a in ANALYSES.values():
        if model_id in a.model_ids:
            return a
    raise KeyError(model_id)


def all_label_ids() -> dict[str, tuple[str, ...]]:
    """Label ids by analysis, for statistics and the image library's folders."""
    return dict(_label_ids())       # a copy: callers may change theirs


def all_decision_ids() -> dict[str, tuple[str, ...]]:
    """What a clinician's decision (and so a record's final label) may be, by analysis:
    the analysis's classes and the referrals."""
    return dict(_decision_ids())


# The catalogue never changes while the program runs; these are asked for once per record
# when an import or a restore files a store's images (hundreds of thousands of times).
@functools.cache
def _label_ids() -> dict[str, tuple[str, ...]]:
    return {a.id: tuple(c.id for c in a.label_classes()) for a in ANALYSES.values()}


@functools.cache
def _decision_ids() -> dict[str, tuple[str, ...]]:
    return {a.id: tuple(c.id for c in a.decision_choices()) for a in ANALYSES.values()}


# What a screening figure calls "found": the classes that mean "not normal" for a model whose
# first question is normal/benign against the rest. Sensitivity (abnormal found), specificity
# (normal called normal) and the false-alarm rate are measured on them (``bccdms-export compare``,
# the post's "abnormal found 91 % -> 94 %"). Subtype, grade and cervix-type models answer "which
# kind", not "is something wrong": they have no positive class.
_NEGATIVE_CLASS = {"breast_binary": "benign", "pap_smear": "normal", "cervix_histopathology": "normal"}


def positive_classes(model_id: str) -> tuple[str, ...]:
    """The classes a screening call counts as found (malignant, abnormal, precancer or cancer);
    empty for a model without a negative class."""
    negative = _NEGATIVE_CLASS.get(model_id)
    if negative is None:
        return ()
    return tuple(c for c in model(model_id).class_ids if c != negative)


def negative_class(model_id: str) -> str | None:
    """The class that means "nothing wrong found" (benign, normal), or None."""
    return _NEGATIVE_CLASS.get(model_id)


def class_path(analysis_id: str, label: str) -> dict[str, str]:
    """The class each model of the cascade gives on the way to an analysis's ``label``.

    ``breast_histopathology``, ``ductal_carcinoma`` → ``{breast_binary: malignant,
    breast_malignant_subtype: ductal_carcinoma}``; a first-model class is a path of one step;
    a label no step leads to gives ``{}``. Training sets use it to teach every model of the
    cascade from one confirmed label.
    """
    a = analysis(analysis_id)
    first = MODELS[a.first_model]
    if label in first.class_ids:
        return {first.id: label}
    for rule in a.rules:
        if not rule.refines_label:
            continue
        if label in MODELS[rule.then_model].class_ids:
            before = class_path(analysis_id, rule.when_class)
            if before and next(reversed(before.values())) == rule.when_class:
                return {**before, rule.then_model: label}
    return {}
