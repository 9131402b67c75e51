"""Model-pack verification: whatever is wrong with a pack, it is refused with a sentence
that says what and what to do, and nothing from it runs."""
from __future__ import annotations

import pytest

from appliance import signing
from appliance.errors import PackError
from appliance.inference.pack import MANIFEST, SIGNATURE, load_pack

from inference_helpers import clone_pack, manifest_of, own_copy, reseal, sign_raw

MODEL_FILE = "breast_binary/model.int8.onnx"


@pytest.fixture
def pack(tiny_pack, tmp_path):
    return clone_pack(tiny_pack, tmp_path / "pack")


def trusted(key):
    return [signing.public_b64(key)]


def test_the_tiny_pack_verifies_and_lists_all_seven_models(tiny_pack, pack_key):
    p = load_pack(tiny_pack, trusted(pack_key), allow_demo=False)
    assert p.trusted and not p.demo
    assert set(p.models) == {"breast_binary", "breast_benign_subtype", "breast_malignant_subtype",
                             "breast_grade", "cervix_histopathology", "pap_smear", "cervix_type"}
    assert p.verify_all() == []
    assert p.read_verified(MODEL_FILE)[:2] == (tiny_pack / MODEL_FILE).read_bytes()[:2]


def test_a_flipped_byte_in_a_model_file_is_refused_on_read(pack, pack_key):
    target = own_copy(pack / MODEL_FILE)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    p = load_pack(pack, trusted(pack_key))            # same size: the manifest still loads
    with pytest.raises(PackError) as err:
        p.read_verified(MODEL_FILE)
    assert "does not match its checksum" in err.value.message and "Reinstall" in err.value.hint
    assert p.verify_all() == [f"{MODEL_FILE}: checksum does not match"]


WEIGHTS_FILE = "breast_binary/model.int8.bin"


def test_a_verified_map_holds_the_checked_bytes_even_when_the_file_changes_later(pack, pack_key):
    original = (pack / WEIGHTS_FILE).read_bytes()
    target = own_copy(pack / WEIGHTS_FILE)
    mapping = load_pack(pack, trusted(pack_key)).map_verified(WEIGHTS_FILE)
    assert mapping[:] == original
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    target.write_bytes(bytes(changed))                # rewritten in place, as a careless copy would
    assert mapping[:] == original                     # every page was copied before it was checked


def test_a_flipped_byte_is_refused_when_mapped_too(pack, pack_key):
    target = own_copy(pack / WEIGHTS_FILE)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key)).map_verified(WEIGHTS_FILE)
    assert "does not match its checksum" in err.value.message and "Reinstall" in err.value.hint


def test_a_file_of_the_wrong_size_is_refused_when_the_pack_loads(pack, pack_key):
    with open(own_copy(pack / MODEL_FILE), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PackError, match="wrong size"):
        load_pack(pack, trusted(pack_key))


def test_an_edited_manifest_breaks_the_signature(pack, pack_key):
    text = (pack / MANIFEST).read_text().replace('"temperature": 1.0', '"temperature": 0.5', 1)
    (pack / MANIFEST).write_text(text)
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key))
    assert "signature" in err.value.message and "altered" in err.value.message


def test_a_missing_or_garbled_signature_is_refused(pack, pack_key):
    (pack / SIGNATURE).write_text("bm90IGEgc2lnbmF0dXJl\n")
    with pytest.raises(PackError, match="signature"):
        load_pack(pack, trusted(pack_key))
    (pack / SIGNATURE).unlink()
    with pytest.raises(PackError, match="not signed"):
        load_pack(pack, trusted(pack_key))


def test_a_pack_signed_by_an_untrusted_key_is_refused(pack, pack_key):
    stranger = signing.new_private_key()
    reseal(pack, stranger)
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key))
    assert "does not trust" in err.value.message and "trusted_model_keys" in err.value.hint


def test_a_demo_pack_is_refused_in_clinical_mode_and_accepted_otherwise(pack):
    demo_key = signing.new_private_key()

    def make_demo(manifest):
        manifest["demo"] = True
        for entry in manifest["models"].values():
            entry["demo"] = True
    reseal(pack, demo_key, make_demo)
    assert load_pack(pack, [], allow_demo=True).demo
    with pytest.raises(PackError) as err:
        load_pack(pack, [], allow_demo=False)
    assert "demo pack" in err.value.message and "clinical" in err.value.message


def test_a_missing_file_is_refused(pack, pack_key):
    (pack / MODEL_FILE).unlink()
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key))
    assert f"missing the file {MODEL_FILE}" in err.value.message


def test_unknown_classes_are_refused(pack, pack_key):
    def rename(manifest):
        manifest["models"]["breast_binary"]["classes"] = ["benign", "cancer"]
    reseal(pack, pack_key, rename)
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key))
    assert "['benign', 'cancer']" in err.value.message and "expects" in err.value.message


def test_an_unknown_model_is_refused(pack, pack_key):
    def add(manifest):
        manifest["models"]["lung_xray"] = dict(manifest["models"]["pap_smear"])
    reseal(pack, pack_key, add)
    with pytest.raises(PackError, match="unknown model 'lung_xray'"):
        load_pack(pack, trusted(pack_key))


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/passwd", "breast_binary/../../x.onnx"])
def test_paths_leaving_the_pack_are_refused(pack, pack_key, bad_path):
    manifest = manifest_of(pack)
    manifest["models"]["breast_binary"]["files"]["onnx_int8"] = bad_path
    manifest["files"][bad_path] = {"sha256": "0" * 64, "size": 1}
    sign_raw(pack, pack_key, manifest)
    with pytest.raises(PackError) as err:
        load_pack(pack, trusted(pack_key))
    assert "outside the pack" in err.value.message and "Do not install" in err.value.hint


def test_no_manifest_and_broken_json_are_clear(tmp_path, pack, pack_key):
    with pytest.raises(PackError) as err:
        load_pack(tmp_path / "empty")
    assert "no manifest.json" in err.value.message and "bccdms-export demo" in err.value.hint
    (pack / MANIFEST).write_text("{not json")
    with pytest.raises(PackError, match="not valid JSON"):
        load_pack(pack, trusted(pack_key))


def test_an_oversized_manifest_is_refused_before_it_is_read(pack, pack_key):
    with open(pack / MANIFEST, "ab") as fh:
        fh.truncate(9 << 20)                              # sparse: no 9 MB written
    with pytest.raises(PackError, match="far too large"):
        load_pack(pack, trusted(pack_key))


def test_demo_models_in_a_pack_not_marked_demo_are_refused(pack, pack_key):
    manifest = manifest_of(pack)
    manifest["models"]["pap_smear"]["demo"] = True       # write_manifest would mark the pack demo
    sign_raw(pack, pack_key, manifest)
    with pytest.raises(PackError, match="demo models but is not marked"):
        load_pack(pack, trusted(pack_key))
