"""The store's house: record kinds depend on the core (not on ``Store`` nor on each other's insides),
the stored-result schema is one validator, and the image library takes the facts a caller knows."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import appliance.store
from appliance.errors import BadImage, NotFound, UserError
from appliance.store import Store
from appliance.store.audit import AuditLog
from appliance.store.core import StoreCore
from appliance.store.history import History
from appliance.store.images import ImageFacts
from appliance.store.incoming import check_incoming
from appliance.store.result_schema import checked_result, result_problem
from appliance.store.users import Users
from test_store_support import jpeg_bytes, register, result_json, snapshot, spoiled

STORE_PACKAGE = Path(appliance.store.__file__).parent
# Libraries a store module may import inside the function that needs them: heavy and optional
# ones (docs/ARCHITECTURE.md "Rules for every module"). Nothing else: an import inside a function
# to dodge a cycle hides a tangle this test exists to keep out.
HEAVY_OPTIONAL = {"openvino", "onnxruntime", "cv2", "picamera2"}
# Private members reached on an object that is not ``self``/``cls``, each justified.
PRIVATE_REACH_ALLOWED = {
    ("store.py", "store._open"),                 # Store.open's own new instance
    ("locking.py", "lock._forget_in_child"),     # the module's fork hook over its own lock classes
}


def _modules():
    paths = sorted(STORE_PACKAGE.glob("*.py"))
    assert len(paths) > 10
    return [(path.name, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in paths]


def _imports(tree):
    """(import node, whether it sits inside a function) for every import of a module."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    visit(tree, False)
    return found


def _imported_names(node) -> list[tuple[str, str]]:
    """(module as written, name) pairs; ``import a.b`` gives ("a.b", "")."""
    if isinstance(node, ast.Import):
        return [(alias.name, "") for alias in node.names]
    module = "." * node.level + (node.module or "")
    return [(module, alias.name) for alias in node.names]


def test_no_store_module_imports_store_and_none_imports_inside_a_function():
    wrong = []
    for name, tree in _modules():
        for node, in_function in _imports(tree):
            for module, imported in _imported_names(node):
                names_store_module = module in (".store", "appliance.store.store") or module.endswith(".store.store")
                if name not in ("store.py", "__init__.py") and (
                        imported == "Store" or names_store_module or (module == "." and imported == "store")):
                    wrong.append(f"{name}:{node.lineno} imports Store ({ast.unparse(node)})")
                top = module.lstrip(".").split(".")[0]
                if in_function and (node.level or top not in HEAVY_OPTIONAL):
                    wrong.append(f"{name}:{node.lineno} imports inside a function ({ast.unparse(node)})")
    assert wrong == []


def test_no_store_module_reaches_into_another_objects_private_members():
    wrong = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if (name, ast.unparse(node)) not in PRIVATE_REACH_ALLOWED:
                    wrong.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert wrong == []


def test_the_image_library_does_not_import_the_exams():
    tree = dict(_modules())["images.py"]
    modules = {module for node, _ in _imports(tree) for module, _ in _imported_names(node)}
    assert ".exams" not in modules and ".vocabulary" in modules


def test_roles_are_defined_once():
    from appliance.cli import users as cli_users
    from appliance.store import vocabulary
    from appliance.web import roles
    assert roles.ROLES is vocabulary.ROLES and appliance.store.ROLES is vocabulary.ROLES
    assert "ROLE_CHOICES" not in vars(cli_users) and cli_users.ROLES is vocabulary.ROLES
    for path in [*STORE_PACKAGE.glob("*.py"), Path(roles.__file__), Path(cli_users.__file__)]:
        if path.name != "vocabulary.py":
            assert '"nurse", "doctor", "supervisor", "admin"' not in path.read_text(encoding="utf-8"), path


# --- the core, with kinds made on it directly --------------------------------------------------

def test_kinds_work_on_a_core_alone(cfg):
    """Users, the audit log and the history made on a bare core (no Store): the core is all they need."""
    core = StoreCore(cfg)
    with core.opening():
        core.open_meta()
        core.post_id = "post-core"
        users, audit, history = Users(core), AuditLog(core), History(core)
        core.connect(audit=audit, history=history)
        core.scan()
        core.start_counting()
    try:
        before = core.seq
        user = users.create("almaz", "correct horse", "nurse", by="admin")
        assert user["post_id"] == "post-core" and core.seq > before
        entries, total = audit.query()
        assert total == 1 and entries[0]["action"] == "user.create" and entries[0]["actor"] == "admin"
        with core.writing():
            stamped = core.new_record({"kind": "x"})
            core.keep_version("users", users.stored(users.index.local["almaz"]), "a test")
        assert stamped["post_id"] == "post-core" and stamped["created_at"] == stamped["updated_at"]
        assert [v["username"] for v in history.versions(user["uuid"])] == ["almaz"]
        with pytest.raises(AssertionError):
            core.next_seq()                     # only under the writer lock
    finally:
        core.close()
    with Store.open(cfg) as store:              # the same files, through the facade
        assert store.users.get("almaz")["role"] == "nurse" and store.audit.query()[1] == 1


def test_a_failed_audit_entry_is_a_warning_not_a_failed_change(cfg):
    with Store.open(cfg) as store:
        class FullDisk:
            def append(self, *args):
                from appliance.errors import StoreError
                raise StoreError("The disk is full.", "Free some space.")
        store.core.connect(audit=FullDisk(), history=store.history)
        patient = store.patients.register("JU-1", "Almaz Tadesse", by="nurse1")
        assert store.patients.get(patient["uuid"]) == patient
        assert any("patient.register" in w and "disk is full" in w for w in store.warnings)


# --- one validator of the stored result ----------------------------------------------------------

def _result(**changes) -> dict:
    return spoiled(result_json("pap_smear", "abnormal"), **changes)


BAD_RESULTS = [
    ("not an object", "model result is not a JSON object"),
    (_result(x=float("nan")), "not plain JSON data"),
    (_result(notes="x" * 300_000), "too large"),
    (_result(label="type_2"), "label 'type_2' is not a class of Pap smear"),
    (_result(steps={"model": "pap_smear"}), "steps are not a list"),
    (_result(steps=["pap_smear"]), "step 1 of the model result is not a JSON object"),
    (_result(step_model="breast_binary"), "model 'breast_binary', which is not a model of pap_smear"),
    (_result(step_probabilities=[0.9, 0.1]), "no table of probabilities"),
    (_result(step_probabilities={"tumour": 0.5}), "'tumour', which is not a class of pap_smear"),
    (_result(step_probabilities={"abnormal": 1.5}), "probability that is not a number from 0 to 1"),
    (_result(step_probabilities={"abnormal": True}), "probability that is not a number from 0 to 1"),
    (_result(step_top="tumour"), "top class 'tumour'"),
    (_result(step_confidence=-0.1), "confidence that is not a number from 0 to 1"),
    (_result(step_version=3), "model version that is not text"),
    (_result(path=[["pap_smear"]]), "path is not a list of [model, class]"),
    (_result(path=[["breast_binary", "malignant"]]), "path is not a list of [model, class]"),
    (_result(quality=["ok"]), "quality is not a JSON object"),
    (_result(image_info="photo.jpg"), "image_info is not a JSON object"),
    (_result(quality={"warnings": ["blurred"]}), "quality warnings are not a list of messages"),
    (_result(timings_ms={"total": "slow"}), "timings are not numbers"),
]


@pytest.mark.parametrize("result, words", BAD_RESULTS)
def test_a_bad_result_is_refused_when_saved_with_a_sentence_and_nothing_saved(cfg, result, words):
    with Store.open(cfg) as store:
        patient = register(store)
        before = snapshot(store)
        exam = {"patient_uuid": patient["uuid"], "analysis": "pap_smear", "label": "abnormal", "result": result}
        with pytest.raises(UserError) as refused:
            store.exams.save(exam, jpeg_bytes(3), by="nurse1")
        assert words in refused.value.message and refused.value.message.startswith("The exam cannot be stored: ")
        assert refused.value.hint == "Run the analysis again."
        assert snapshot(store) == before and not list((cfg.data_dir / "images").rglob("*.jpg"))


@pytest.mark.parametrize("result, words", BAD_RESULTS)
def test_the_same_validator_refuses_the_result_of_an_incoming_exam(result, words):
    assert words in result_problem(result, "pap_smear")
    exam = {"uuid": "0f6c2d1e-8a4b-4c3d-9e2f-1a2b3c4d5e6f", "post_id": "post-a", "created_at": "2026-01-02T03:04:05Z",
            "updated_at": "2026-01-02T03:04:05Z", "analysis": "pap_smear", "label": "abnormal",
            "final_label": "abnormal", "patient_uuid": "1f6c2d1e-8a4b-4c3d-9e2f-1a2b3c4d5e6f", "result": result}
    with pytest.raises(UserError) as refused:
        check_incoming("exams", exam)
    assert words in refused.value.message and "cannot be imported" in refused.value.message


def test_a_good_result_is_stored_as_plain_json_without_the_heatmap_note():
    result = {**result_json("pap_smear", "abnormal"), "heatmap": {"available": True}}
    stored = checked_result(result, "pap_smear")
    assert "heatmap" not in stored and stored["steps"] == result["steps"] and stored is not result
    assert checked_result(None, "pap_smear") == {} and result_problem(result, "pap_smear") is None


# --- the image library takes the facts a caller knows -----------------------------------------------

@pytest.fixture
def hashes(monkeypatch):
    """Counts the sha256 computations of the image library."""
    from appliance.store import images
    count = {"n": 0}

    def counting(*args):
        count["n"] += 1
        return hashlib.sha256(*args)
    monkeypatch.setattr(images, "hashlib", SimpleNamespace(sha256=counting))
    return count


def _facts(data: bytes, **changes) -> ImageFacts:
    info = {"sha256": hashlib.sha256(data).hexdigest(), "format": "JPEG", "width": 64, "height": 48, **changes}
    return ImageFacts.from_info(info)


def _stored(cfg) -> list[str]:
    return sorted(p.name for p in (cfg.data_dir / "images").rglob("*") if p.is_file() and p.parent.name != ".incoming")


def test_put_with_known_facts_hashes_a_new_image_once_and_a_stored_one_never(store, cfg, hashes):
    data = jpeg_bytes(5)
    facts = _facts(data, width=4000, height=3000)
    assert store.images.put(data, facts) == {**facts.as_record(), "width": 4000, "height": 3000}
    assert hashes["n"] == 1 and _stored(cfg) == [f"{facts.sha256}.jpg"]
    assert store.images.path(facts.sha256).read_bytes() == data
    assert store.images.put(data, facts)["sha256"] == facts.sha256 and hashes["n"] == 1


def test_put_of_facts_it_described_itself_hashes_once(store, hashes):
    data = jpeg_bytes(6)
    facts = store.images.describe(data)
    assert (facts.ext, facts.width, facts.height) == ("jpg", 64, 48) and hashes["n"] == 1
    store.images.put(data, facts)
    assert hashes["n"] == 1
    store.images.put(bytearray(data), facts)       # other (mutable) bytes: checked again
    assert hashes["n"] == 1                        # stored already: same length and signature suffice


@pytest.mark.parametrize("facts_of, why", [
    (lambda data: _facts(jpeg_bytes(8)), "the facts of another image"),
    (lambda data: _facts(data, format="PNG"), "a PNG's extension for JPEG bytes"),
    (lambda data: ImageFacts("not a hash", "jpg", 64, 48), "no sha256"),
    (lambda data: ImageFacts(hashlib.sha256(data).hexdigest(), "jpg", 0, 48), "no size"),
])
def test_put_never_files_bytes_under_facts_that_are_not_theirs(store, cfg, facts_of, why):
    data = jpeg_bytes(7)
    with pytest.raises(UserError, match="made from another image"):
        store.images.put(data, facts_of(data))
    assert _stored(cfg) == [], why


def test_put_refuses_bytes_of_another_length_under_a_stored_name(store, cfg):
    stored, other = jpeg_bytes(9), jpeg_bytes(10, (80, 60))
    store.images.put(stored)
    with pytest.raises(UserError, match="made from another image"):
        store.images.put(other, _facts(stored))
    assert store.images.path(_facts(stored).sha256).read_bytes() == stored


def test_put_with_facts_still_refuses_what_is_too_large_or_empty(store, cfg):
    with pytest.raises(BadImage, match="empty"):
        store.images.put(b"", ImageFacts(hashlib.sha256(b"").hexdigest(), "jpg", 1, 1))
    big = b"\xff\xd8\xff" + b"\0" * (cfg.server.max_upload_mb * 1024 * 1024)
    with pytest.raises(BadImage, match="too large"):
        store.images.put(big, _facts(big))
    assert _stored(cfg) == []


# --- exams.save with what the caller already knows -----------------------------------------------------

def _exam(patient, data) -> dict:
    result = result_json("pap_smear", "abnormal")
    result["image_info"] = {"sha256": hashlib.sha256(data).hexdigest(), "width": 64, "height": 48, "format": "JPEG"}
    return {"patient_uuid": patient["uuid"], "analysis": "pap_smear", "result": result}


def test_save_with_the_patient_and_the_image_facts_hashes_the_image_once(store, hashes):
    patient = register(store)
    data = jpeg_bytes(11)
    exam = _exam(patient, data)
    facts = ImageFacts.from_info(exam["result"]["image_info"])
    saved = store.exams.save(exam, data, by="nurse1", patient=patient, image_facts=facts)
    assert hashes["n"] == 1 and saved["image"] == facts.as_record() and saved["patient_pid"] == patient["pid"]
    assert store.exams.get(saved["uuid"]) == saved and store.images.path(facts.sha256).read_bytes() == data
    store.exams.save(_exam(patient, jpeg_bytes(12)), jpeg_bytes(12), by="nurse1")   # no facts: the library's own
    assert hashes["n"] == 2


def test_save_refuses_facts_of_another_image_before_anything_is_stored(store, cfg):
    patient = register(store)
    first, second = jpeg_bytes(13), jpeg_bytes(14)
    before = snapshot(store)
    with pytest.raises(UserError, match="made from another image"):          # the result names the first
        store.exams.save(_exam(patient, first), second, by="nurse1", image_facts=_facts(second))
    with pytest.raises(UserError, match="made from another image"):          # the facts lie about the bytes
        store.exams.save(_exam(patient, first), second, by="nurse1", image_facts=_facts(first))
    assert snapshot(store) == before and _stored(cfg) == []


def test_save_refuses_a_patient_record_that_is_not_the_exams_or_not_registered(store, cfg):
    patient, other = register(store), register(store, "JU-000002", "Hana Bekele")
    data = jpeg_bytes(15)
    before = snapshot(store)
    with pytest.raises(UserError, match="another patient"):
        store.exams.save(_exam(patient, data), data, by="nurse1", patient=other)
    with pytest.raises(NotFound, match="not registered"):
        store.exams.save({**_exam(patient, data), "patient_uuid": "nobody"}, data, by="nurse1")
    assert snapshot(store) == before and _stored(cfg) == []
