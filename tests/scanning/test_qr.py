import pytest

from services.scanning.config import Settings
from services.scanning.qr import InvalidQr, any_code, classify, parent_code
from shared.codes import normalize_code as normalize_qr

SETTINGS = Settings()


@pytest.mark.parametrize("raw,expected", [
    ("sb12345", "SB12345"),
    ("SB12345\r\n", "SB12345"),
    ("\tSB12345 ", "SB12345"),
    ("\u200bSB\u200d12345\ufeff", "SB12345"),
    ("\x1dm444-00007\x04", "M444-00007"),
    ("ＳＢ１２３４５", "SB12345"),  # full-width input from a misconfigured scanner
])
def test_scanner_noise_is_removed_and_codes_are_upper_cased(raw, expected):
    assert normalize_qr(raw) == expected


@pytest.mark.parametrize("qr,parent,capacity", [
    ("SB12345", True, 30), ("M444-12345", True, 15), ("CHILD-1", False, None), ("SB1234", False, None),
    ("ABCD", False, None), ("A1B2C3D4E5F6G7H8I9J0", False, None),
])
def test_formats_classify_parents_with_capacity_and_children(qr, parent, capacity):
    kind = classify(qr, SETTINGS)
    assert (kind.is_parent, kind.capacity) == (parent, capacity)


@pytest.mark.parametrize("qr", ["ABC", "A" * 21, "AB CD", "SB_12345", "", "BAG/1"])
def test_codes_matching_no_format_are_rejected(qr):
    assert classify(qr, SETTINGS) is None


def test_formats_and_capacities_are_settings():
    custom = Settings(parent_formats='[{"pattern": "^P[0-9]{3}$", "capacity": 5}]', child_pattern="^C[0-9]{3}$")
    assert classify("P123", custom).capacity == 5
    assert classify("SB12345", custom) is None
    assert classify("C123", custom).is_parent is False


def test_a_code_holding_the_bill_mark_is_never_a_bag_whatever_the_formats():
    anything = Settings(parent_formats='[{"pattern": "^P", "capacity": 5}]', child_pattern="^.+$")
    assert classify("P_00001", anything) is None
    assert classify("BILL_0001", anything) is None
    with pytest.raises(InvalidQr, match="a bill code"):
        parent_code(anything, "p_00001")
    with pytest.raises(InvalidQr, match="a bill code"):
        any_code(SETTINGS, "BILL_0001")
