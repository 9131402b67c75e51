"""Bundles that must be refused with a clear sentence, leaving the supervisor's store exactly as it was.

Most are crafted by hand and signed with the key of a post the supervisor trusts: the checks
after the signature must hold even against a compromised or buggy post.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
import tarfile

import pytest

from appliance import signing
from appliance.exchange import container, importer, keys, layout
from appliance.exchange.container import BundleRefused
from appliance.exchange.export import export_bundle

from test_exchange_support import craft_bundle, gz_lines, manifest_for, snapshot, tar_member, world  # noqa: F401
from test_store_support import spoiled

JPEG_NAME = "a" * 64


@pytest.fixture
def guarded(world):
    """The world, plus a check run after the test that the supervisor's folder did not change."""
    w = world
    before = snapshot(w.supervisor.cfg.data_dir)
    seq = w.supervisor.store.change_seq()
    yield w
    assert snapshot(w.supervisor.cfg.data_dir) == before, "a refused bundle changed the store"
    assert w.supervisor.store.change_seq() == seq
    staging = w.supervisor.cfg.data_dir / "exchange" / "staging"
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*")), "staged files were left"


def _refused(w, path, *words, **options):
    with pytest.raises(BundleRefused) as err:
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, path, **options)
    text = str(err.value)
    for word in words:
        assert word in text, text
    assert err.value.hint
    return err.value


def _real_bundle(w):
    w.add_exam("JU-1", "Almaz Kebede")
    return export_bundle(w.post.store, w.post.cfg, w.stick).path


def _records(w):
    """A valid patient and exam of the post, as JSON lines members (and the exam's image)."""
    patient, exam = w.add_exam("JU-1", "Almaz Kebede")
    image = w.post.store.images.path(exam["image"]["sha256"]).read_bytes()
    return w.post.store.patients.get(patient["uuid"]), w.post.store.exams.get(exam["uuid"]), image


def _members(patients, exams, images=()):
    out = [tar_member(layout.PATIENTS, gz_lines(patients)), tar_member(layout.EXAMS, gz_lines(exams))]
    for name, data in images:
        out.append(tar_member(name, data))
    return out


# -- the envelope: signature, key, truncation ---------------------------------------------------

def test_a_changed_byte_in_the_ciphertext_is_refused(guarded):
    path = _real_bundle(guarded)
    env = container.read_envelope(path)
    data = bytearray(path.read_bytes())
    data[env.ct_offset + env.ct_len // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(guarded, path, "altered")


def test_a_changed_header_is_refused(guarded):
    path = _real_bundle(guarded)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Agaro health post", b"Agaru health post", 1))
    _refused(guarded, path, "signature does not match")


@pytest.mark.parametrize("cut", ["header", "middle", "last_byte", "trailer"])
def test_a_truncated_bundle_is_refused(guarded, cut):
    path = _real_bundle(guarded)
    data = path.read_bytes()
    env = container.read_envelope(path)
    keep = {"header": 20, "middle": env.ct_offset + env.ct_len // 2, "last_byte": len(data) - 1,
            "trailer": env.ct_offset + env.ct_len}[cut]
    path.write_bytes(data[:keep])
    error = _refused(guarded, path, "refused")
    assert any(word in error.message for word in ("incomplete", "cut", "not a BCCDMS bundle"))


def test_a_bundle_for_another_supervisor_is_refused(guarded):
    w = guarded
    other = keys.create_supervisor_key(w.tmp / "other-supervisor.key")
    w.post.cfg.exchange.supervisor_public_key = signing.b64(keys.x25519_public_raw(other))
    path = _real_bundle(w)
    error = _refused(w, path, "encrypted for another supervisor key")
    assert keys.fingerprint(keys.x25519_public_raw(other)) in error.message


def test_a_bundle_signed_by_another_key_for_a_known_post_is_refused(guarded):
    w = guarded
    w.add_exam("JU-1", "Almaz Kebede")
    impostor = signing.new_private_key()
    path = craft_bundle(w, [], signing_key=impostor)
    _refused(w, path, "signed with a different key")


def test_a_bundle_re_signed_as_another_trusted_post_opens_nothing(guarded):
    """Post B strips post A's signature and signs A's ciphertext as its own: the key derived from
    the header no longer matches, so nothing decrypts."""
    w = guarded
    path = _real_bundle(w)
    other = w.new_post("Bedele health post")
    w.trust(other)
    env = container.read_envelope(path)
    header = dict(env.header, post_id=other.store.post_id, post_name="Bedele health post",
                  post_signing_key=w.post_key(other))
    header_bytes = json.dumps(header, sort_keys=True).encode()
    prefix = container.MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes
    message = container._signed_message(hashlib.sha256(prefix).digest(), env.ct_len, env.ct_digest)
    signature = keys.post_signing_key(other.cfg).sign(message)
    ciphertext = path.read_bytes()[env.ct_offset:env.ct_offset + env.ct_len]
    forged = w.stick / "forged.bccdms"
    forged.write_bytes(prefix + ciphertext + container.TRAILER.pack(container.TRAILER_MAGIC, env.ct_len,
                                                                    env.ct_digest, signature))
    _refused(w, forged, "cannot be decrypted")
    other.store.close()


def test_an_accepted_unknown_post_cannot_be_taken_over_by_another_key(world):
    w = world
    stranger, first = w.bundle_from_new_post("Unlisted post")
    importer.import_bundle(w.supervisor.store, w.supervisor.cfg, first, accept_unknown=True)
    before = snapshot(w.supervisor.cfg.data_dir)
    impostor = craft_bundle(w, [], post=stranger, signing_key=signing.new_private_key())
    with pytest.raises(BundleRefused, match="different key than the bundles imported from that post before"):
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, impostor, accept_unknown=True)
    assert snapshot(w.supervisor.cfg.data_dir) == before
    stranger.store.close()


def test_a_stick_pulled_out_during_the_import_refuses_that_bundle(guarded):
    path = _real_bundle(guarded)
    env = container.read_envelope(path)
    path.unlink()                                  # the stick is gone after the header was read
    with pytest.raises(BundleRefused, match="could not be read"):
        importer.import_envelope(guarded.supervisor.store, guarded.supervisor.cfg, env)


def test_something_that_is_not_a_bundle_is_refused(guarded):
    path = guarded.stick / "photo.bccdms"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a bundle at all" * 10)
    _refused(guarded, path, "not a BCCDMS bundle")


# -- the payload: paths, links, bombs, manifest ---------------------------------------------------

@pytest.mark.parametrize("member, words", [
    (tar_member("../../evil.txt", b"owned"), "unsafe path"),
    (tar_member("/tmp/evil-absolute.txt", b"owned"), "unsafe path"),
    (tar_member("images/pap_smear/../../../evil.txt", b"owned"), "unsafe path"),
    (tar_member(f"images/pap_smear/normal/{JPEG_NAME}.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
     "holds a link"),
    (tar_member(f"images/pap_smear/normal/{JPEG_NAME}.jpg", type=tarfile.LNKTYPE, linkname="records/exams.jsonl.gz"),
     "holds a link"),
    (tar_member("records/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3), "not a plain file"),
    (tar_member("images", type=tarfile.DIRTYPE), "not a plain file"),
    (tar_member("notes.txt", b"hello"), "unexpected file"),
])
def test_hostile_members_are_refused(guarded, member, words):
    w = guarded
    path = craft_bundle(w, [member])
    _refused(w, path, words)
    assert not (w.tmp / "evil.txt").exists() and not (w.supervisor.cfg.data_dir / "evil.txt").exists()


def test_a_sparse_member_is_refused(guarded):
    info, data = tar_member(layout.EXAMS, b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": layout.EXAMS,
                        "GNU.sparse.realsize": str(50 << 30)}
    _refused(guarded, craft_bundle(guarded, [(info, data)]), "sparse file")


def test_a_decompression_bomb_is_refused(guarded):
    bomb = gzip.compress(b"\0" * (80 << 20), compresslevel=1)
    assert len(bomb) < (1 << 20)
    _refused(guarded, craft_bundle(guarded, [tar_member(layout.EXAMS, bomb)]), "decompression bomb")


def test_a_bundle_beyond_the_import_limit_is_refused(guarded):
    guarded.supervisor.cfg.exchange.max_import_mb = 1
    _refused(guarded, craft_bundle(guarded, [tar_member(layout.AUDIT_SUMMARY, b"[" + b" " * (2 << 20) + b"]")]),
             "import limit")


def test_a_member_twice_is_refused(guarded):
    members = [tar_member(layout.AUDIT_SUMMARY, b"[]"), tar_member(layout.AUDIT_SUMMARY, b"[]")]
    _refused(guarded, craft_bundle(guarded, members, manifest=b"{}"), "twice")


@pytest.mark.parametrize("problem", ["no_manifest", "wrong_checksum", "unlisted", "other_bundle_id", "not_json"])
def test_a_manifest_that_does_not_match_is_refused(guarded, problem):
    w = guarded
    members = [tar_member(layout.AUDIT_SUMMARY, b"[]")]
    header = {"bundle_id": "0f8e6a52-4d0c-4a59-9d9e-4bb1e1a3c001"}
    full_header = {**header, "post_id": w.post.store.post_id, "kind": "records", "seq_from": 0, "seq_to": 10}
    manifest = {
        "no_manifest": False,
        "wrong_checksum": manifest_for(full_header, members,
                                       members={layout.AUDIT_SUMMARY: {"sha256": "0" * 64, "size": 2}}),
        "unlisted": manifest_for(full_header, members, members={}),
        "other_bundle_id": manifest_for({**full_header, "bundle_id": "another"}, members),
        "not_json": b"{not json",
    }[problem]
    words = {"no_manifest": "no manifest", "wrong_checksum": "checksum", "unlisted": "do not match its manifest",
             "other_bundle_id": "disagree about bundle_id", "not_json": "not valid JSON"}[problem]
    _refused(w, craft_bundle(w, members, header=header, manifest=manifest), words)


# -- records and images ----------------------------------------------------------------------

def test_records_of_another_post_are_refused(guarded):
    w = guarded
    patient, exam, _ = _records(w)
    exam = dict(exam, post_id="post-somebody-else")
    _refused(w, craft_bundle(w, _members([patient], [exam])), "belongs to another post")


def test_a_record_that_would_overwrite_another_posts_record_is_refused(world):
    w = world
    other = w.new_post("Bedele health post")
    w.trust(other)
    _, theirs = w.add_exam("BD-1", "Meron Assefa", box=other)
    importer.import_bundle(w.supervisor.store, w.supervisor.cfg, export_bundle(other.store, other.cfg, w.stick).path)
    before = snapshot(w.supervisor.cfg.data_dir)
    patient, mine, image = _records(w)
    stolen = dict(mine, uuid=theirs["uuid"], updated_at="2099-01-01T00:00:00.000Z")
    name = layout.image_member("pap_smear", "normal", mine["image"]["sha256"], mine["image"]["ext"])
    path = craft_bundle(w, _members([patient], [stolen], [(name, image)]), name="steal.bccdms")
    with pytest.raises(BundleRefused, match="record of another post"):
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, path)
    assert snapshot(w.supervisor.cfg.data_dir) == before
    other.store.close()


@pytest.mark.parametrize("line, words", [
    (b"{not json}\n", "not valid JSON"),
    (b"[1, 2, 3]\n", "is not a record"),
    (b'{"uuid": "x"}\n', "uuid"),
])
def test_malformed_record_lines_are_refused(guarded, line, words):
    members = [tar_member(layout.EXAMS, gzip.compress(line))]
    _refused(guarded, craft_bundle(guarded, members), words)


def test_a_record_of_an_unknown_analysis_is_refused(guarded):
    w = guarded
    patient, exam, _ = _records(w)
    _refused(w, craft_bundle(w, _members([patient], [dict(exam, analysis="lung_ct")])), "analysis")


def _engine_result(**changes) -> dict:
    """A Pap-smear result shaped as the engine writes it; ``changes`` spoil one part."""
    step = {"model": "pap_smear", "version": "1.0", "demo": False, "probabilities": {"normal": 0.8, "abnormal": 0.2},
            "top": "normal", "confidence": 0.8, "uncertain": False}
    result = {"analysis": "pap_smear", "demo": False, "label": "normal", "steps": [step],
              "path": [["pap_smear", "normal"]], "quality": {"ok": True, "warnings": [{"code": "blur", "message": "x"}]},
              "out_of_scope": {"flagged": False}, "timings_ms": {"total": 30.5}}
    return spoiled(result, **changes)


@pytest.mark.parametrize("result, words", [
    ("not an object", "model result is not a JSON object"),
    (_engine_result(steps={"model": "pap_smear"}), "steps are not a list"),
    (_engine_result(step_model="lung_net"), "model 'lung_net', which is not a model of pap_smear"),
    (_engine_result(step_model="breast_binary"), "model 'breast_binary', which is not a model of pap_smear"),
    (_engine_result(step_probabilities={"normal": "high"}), "probability that is not a number from 0 to 1"),
    (_engine_result(step_probabilities={"normal": 7.5}), "probability that is not a number from 0 to 1"),
    (_engine_result(step_probabilities={"tumour": 0.5}), "'tumour', which is not a class of pap_smear"),
    (_engine_result(step_probabilities=[0.8, 0.2]), "no table of probabilities"),
    (_engine_result(step_top="tumour"), "top class 'tumour'"),
    (_engine_result(path=[["pap_smear"]]), "path is not a list of [model, class]"),
    (_engine_result(quality={"warnings": ["blurred"]}), "quality warnings"),
    (_engine_result(timings_ms={"total": "slow"}), "timings are not numbers"),
])
def test_an_exam_whose_model_result_the_pages_cannot_read_is_refused(guarded, result, words):
    """A signed bundle from other software: refused with a sentence naming the record, nothing merged."""
    w = guarded
    patient, exam, _ = _records(w)
    error = _refused(w, craft_bundle(w, _members([patient], [dict(exam, result=result)])), words)
    assert exam["uuid"] in error.message


@pytest.mark.parametrize("changes, words", [
    ({"decision": {"label": "tumour", "agrees": False}}, "decision 'tumour' is not a decision"),
    ({"decision": {"label": "normal", "agrees": "yes"}}, "decision is malformed"),
    ({"decision": {"label": "normal", "agrees": True, "by": "doctor1", "at": "yesterday"}}, "names no user or time"),
    ({"decision_history": {"label": "normal"}}, "earlier decisions are not a list"),
    ({"decision_history": [{"label": "grade_9"}]}, "earlier decision 'grade_9'"),
])
def test_an_exam_with_malformed_decisions_is_refused(guarded, changes, words):
    w = guarded
    patient, exam, _ = _records(w)
    _refused(w, craft_bundle(w, _members([patient], [dict(exam, **changes)])), words, exam["uuid"])


def test_an_engine_shaped_result_is_taken_in_and_shown(world):
    w = world
    patient, exam, image = _records(w)
    good = dict(exam, result=_engine_result(), decision_history=[
        {"label": "abnormal", "agrees": False, "note": "", "by": "nurse1", "at": exam["created_at"]}])
    name = layout.image_member("pap_smear", "normal", exam["image"]["sha256"], exam["image"]["ext"])
    importer.import_bundle(w.supervisor.store, w.supervisor.cfg, craft_bundle(w, _members([patient], [good], [(name, image)])))
    assert w.supervisor.store.exams.get(exam["uuid"])["result"] == _engine_result()


def test_an_image_that_does_not_match_its_name_is_refused(guarded):
    w = guarded
    patient, exam, image = _records(w)
    name = layout.image_member("pap_smear", "normal", JPEG_NAME, "jpg")
    _refused(w, craft_bundle(w, _members([patient], [exam], [(name, image)])), "does not match its name")


def test_an_image_that_is_not_an_image_is_refused(guarded):
    w = guarded
    patient, exam, _ = _records(w)
    junk = b"#!/bin/sh\necho this is no image\n"
    name = layout.image_member("pap_smear", "normal", hashlib.sha256(junk).hexdigest(), "jpg")
    _refused(w, craft_bundle(w, _members([patient], [exam], [(name, junk)])), "cannot be stored")


def test_a_deidentified_bundle_is_never_merged(guarded):
    w = guarded
    w.add_exam("JU-1", "Almaz Kebede")
    path = export_bundle(w.post.store, w.post.cfg, w.stick, deidentified=True).path
    error = _refused(w, path, "de-identified")
    assert "--extract-to" in error.hint
