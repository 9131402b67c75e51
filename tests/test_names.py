"""Patient names and phone numbers as nurses type them: search keys and validation."""
from __future__ import annotations

import pytest

from appliance.errors import UserError
from appliance.i18n import error_text
from appliance.i18n.names import (BadPhone, format_phone, name_key, name_tokens, normalize_phone, parse_phone,
                                  phone_key)


@pytest.mark.parametrize("typed, stored", [
    ("አበበ በቀለ", "አበበ  በቀለ"),                 # spacing
    ("አበበ፡በቀለ", "አበበ በቀለ"),                 # Ethiopic wordspace
    ("ABEBE BEKELE", "Abebe Bekele"),           # case
    ("abebe-bekele", "Abebe Bekele"),
    ("ሀይሌ", "ኃይሌ"), ("ሃይሌ", "ኃይሌ"), ("ሐይሌ", "ኃይሌ"),   # ሀ/ሐ/ኀ and their 4th order
    ("ስላሴ", "ሥላሴ"), ("ሥላሤ", "ስላሴ"),             # ሰ/ሠ
    ("አለማየሁ", "ዓለማየሁ"), ("ኣለሙ", "ዓለሙ"),         # አ/ዐ, ኣ/ዓ
    ("ጸሐይ", "ፀሐይ"), ("ፀሃይ", "ጸሀይ"),             # ጸ/ፀ
    ("ጉዋደኛ", "ጓደኛ"), ("ቁዋንቁዋ", "ቋንቋ"), ("ሉዋም", "ሏም"),  # labialised forms spelled out
    ("ሙሉዉ", "ሙሉው"),
    ("Gamachu Buaa", "Gammachuu Bu'aa"),        # Qubee double letters and the hudhaa
    ("Kebede", "Kebbede"), ("Tesfaye Haile", "Tesfaye Hailé"),
    ("bu’aa", "Bu'aa"),                         # typographic apostrophe
])
def test_names_match_as_typed(typed, stored):
    assert name_key(typed) == name_key(stored)


@pytest.mark.parametrize("a, b", [("አበበ", "አበባ"), ("ሰላም", "ሸላም"), ("Abebe", "Abeba"), ("ለማ", "ላማ")])
def test_different_names_stay_different(a, b):
    assert name_key(a) != name_key(b)


def test_folding_is_optional_and_for_search_only():
    assert name_key("ኃይሌ ሥላሴ", fold=False) == "ኃይሌ ሥላሴ"
    assert name_key("  Gammachuu  BU'AA ", fold=False) == "gammachuu buaa"
    assert name_tokens("አበበ፡ በቀለ፣ ታደሰ") == ["አበበ", "በቀለ", "ታደሰ"]
    assert name_key("") == "" and name_key(None) == ""


def test_prefix_search_keeps_working_after_folding():
    # The store matches a typed prefix against stored keys: folding both sides keeps that true.
    assert name_key("Gammachuu").startswith(name_key("Gamm"))
    assert name_key("ኃይለ ማርያም").startswith(name_key("ሀይ"))


@pytest.mark.parametrize("typed", ["+251 911 234 567", "+251-911-234-567", "251911234567", "00251 911234567",
                                   "0911 23 45 67", "0911-234567", "911234567", "+251 (0)911 234 567",
                                   "０９１１２３４５６７"])
def test_ethiopian_mobile_formats(typed):
    number = parse_phone(typed)
    assert number.e164 == "+251911234567"
    assert number.kind == "mobile"
    assert phone_key(typed) == "911234567"


def test_safaricom_landline_and_foreign_numbers():
    assert normalize_phone("0711 234 567") == "+251711234567"
    assert parse_phone("0711 234 567").kind == "mobile"
    jimma = parse_phone("047 111 2233")
    assert (jimma.e164, jimma.kind, jimma.national_format()) == ("+251471112233", "landline", "047 111 2233")
    assert jimma.international_format() == "+251 47 111 2233"
    kenya = parse_phone("+254 712 345 678")
    assert (kenya.e164, kenya.kind) == ("+254712345678", "foreign")


def test_display_formats():
    assert format_phone("+251911234567") == "0911 234 567"
    assert format_phone("+251911234567", international=True) == "+251 911 234 567"
    assert format_phone("") == ""
    assert format_phone("call the chief") == "call the chief"     # old free text is shown, never hidden


def test_empty_phone_is_allowed_when_optional():
    assert normalize_phone("") == ""
    assert normalize_phone("   ") == ""


@pytest.mark.parametrize("typed, fragment", [
    ("0911 23", "too few digits"),
    ("0911 234 5678", "too many digits"),
    ("0611 234 567", "does not start like an Ethiopian number"),
    ("09II 234 567", "can only contain digits"),
    ("+0 1234", "not a valid international number"),
    ("", "Enter a phone number"),
])
def test_bad_phones_are_refused_with_a_clear_sentence(typed, fragment):
    with pytest.raises(BadPhone) as err:
        parse_phone(typed)
    assert isinstance(err.value, UserError)
    assert fragment in err.value.message
    assert "0911 234 567" in err.value.hint
    message, hint = error_text(err.value, "om")
    assert message and hint


@pytest.mark.parametrize("partial, key", [
    ("0911", "911"), ("0911 23", "91123"), ("+251 91", "91"), ("2519", "9"), ("251 7", "7"),
    ("00251911", "911"), ("91", "91"), ("", ""),
    ("251112345", "251112345"),    # a complete Dire Dawa landline (025 111 2345) keeps its digits
])
def test_phone_key_works_on_partial_input(partial, key):
    assert phone_key(partial) == key
