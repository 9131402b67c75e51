from appliance import catalogue
from appliance.errors import UserError
import pytest


def test_analysis_ids_and_model_ids_are_the_design_surface():
    assert set(catalogue.ANALYSES) == {"breast_histopathology", "cervical_histopathology", "pap_smear", "cervix_type"}
    assert set(catalogue.MODELS) == {"breast_binary", "breast_benign_subtype", "breast_malignant_subtype",
                                     "breast_grade", "cervix_histopathology", "pap_smear", "cervix_type"}


def test_breast_cascade_follows_the_binary_result():
    breast = catalogue.analysis("breast_histopathology")
    assert breast.next_model("breast_binary", "benign").then_model == "breast_benign_subtype"
    assert breast.next_model("breast_binary", "malignant").then_model == "breast_malignant_subtype"
    assert breast.next_model("breast_malignant_subtype", "ductal_carcinoma").then_model == "breast_grade"
    assert breast.next_model("breast_malignant_subtype", "lobular_carcinoma") is None
    assert breast.model_ids == ("breast_binary", "breast_benign_subtype", "breast_malignant_subtype", "breast_grade")


def test_label_is_the_deepest_refining_class_and_grade_is_an_attribute():
    breast = catalogue.analysis("breast_histopathology")
    path = [("breast_binary", "malignant"), ("breast_malignant_subtype", "ductal_carcinoma"), ("breast_grade", "grade_2")]
    assert breast.label_of(path) == "ductal_carcinoma"
    assert breast.label_of([("breast_binary", "benign")]) == "benign"
    with pytest.raises(ValueError):
        breast.label_of([("breast_binary", "benign"), ("breast_malignant_subtype", "ductal_carcinoma")])
    labels = [c.id for c in breast.label_classes()]
    assert labels[:2] == ["benign", "malignant"] and "fibroadenoma" in labels and "grade_1" not in labels


def test_unknown_analysis_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError) as err:
        catalogue.analysis("lung")
    assert "pap_smear" in str(err.value)
