"""Tests of the split protocols (custom.data.protocols): exact paper splits, errors, slice fractions."""

from __future__ import annotations

import json

import pytest

from custom.data.protocols import (
    PROTOCOL_DIR,
    ProtocolError,
    acdc_splits,
    available_protocols,
    label_mapping,
    load_protocol,
    mmwhs_splits,
    random_case_splits,
)

ACDC_ALL = [f"patient{n:03d}" for n in range(1, 101)]
ACDC_TEST = [f"patient{n:03d}" for start in (7, 27, 47, 67, 87) for n in range(start, start + 4)]
ACDC_VAL = ["patient031", "patient071"]
ACDC_POOL = [c for c in ACDC_ALL if c not in set(ACDC_TEST) | set(ACDC_VAL)]

PAPER_SUBSETS = {
    ("L1", "c1"): [2],
    ("L1", "c2"): [42],
    ("L1", "c3"): [95],
    ("L1", "c4"): [22],
    ("L1", "c5"): [62],
    ("L2", "c1"): [42, 62],
    ("L2", "c2"): [2, 42],
    ("L2", "c3"): [42, 95],
    ("L2", "c4"): [2, 22],
    ("L2", "c5"): [2, 95],
    ("L8", "c1"): [2, 22, 42, 62, 95, 3, 23, 43],
    ("L8", "c2"): [2, 22, 42, 62, 95, 63, 94, 43],
    ("L8", "c3"): [2, 22, 42, 62, 95, 3, 94, 23],
}

MMWHS_TRAIN = [f"mr_train_{n}" for n in range(1001, 1009)]
MMWHS_ALL = [f"mr_train_{n}" for n in range(1001, 1021)]


@pytest.fixture(scope="module")
def acdc():
    return load_protocol("acdc_paper")


@pytest.fixture(scope="module")
def mmwhs():
    return load_protocol("mmwhs_paper")


def _ids(numbers):
    return {f"patient{n:03d}" for n in numbers}


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------


def test_available_protocols_lists_committed_files():
    names = available_protocols()
    assert {"acdc_paper", "mmwhs_paper", "synthetic_acdc"} <= set(names)
    assert names == sorted(p.stem for p in PROTOCOL_DIR.glob("*.json"))


def test_load_protocol_by_name_and_by_path(tmp_path):
    by_name = load_protocol("acdc_paper")
    by_path = load_protocol(PROTOCOL_DIR / "acdc_paper.json")
    assert by_name == by_path
    assert by_name["name"] == "acdc_paper"
    custom = {"name": "mine", "layout": "acdc"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(custom))
    assert load_protocol(str(path)) == custom


def test_load_protocol_unknown_name_lists_available():
    with pytest.raises(ProtocolError) as err:
        load_protocol("no_such_protocol")
    msg = str(err.value)
    assert "no_such_protocol" in msg
    assert "acdc_paper" in msg and "mmwhs_paper" in msg


def test_load_protocol_invalid_json_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ProtocolError, match="broken.json.*not valid JSON"):
        load_protocol(path)


# ---------------------------------------------------------------------------------------------------------------
# acdc_paper
# ---------------------------------------------------------------------------------------------------------------


def test_acdc_paper_fixed_test_validation_and_pool(acdc):
    s = acdc_splits(acdc, ACDC_ALL, "L8", "c1")
    assert s.test == ACDC_TEST
    assert len(s.test) == 20
    assert s.validation == ACDC_VAL
    pool = set(s.labeled) | set(s.unlabeled)
    assert pool == set(ACDC_POOL)
    assert len(pool) == 78
    assert s.missing == []
    assert s.labeled_slices == {}


@pytest.mark.parametrize("labeled,subset", sorted(PAPER_SUBSETS))
def test_acdc_paper_labeled_subsets_exact(acdc, labeled, subset):
    s = acdc_splits(acdc, ACDC_ALL, labeled, subset)
    expected = _ids(PAPER_SUBSETS[(labeled, subset)])
    assert set(s.labeled) == expected
    assert len(s.labeled) == len(expected)
    assert set(s.unlabeled) == set(ACDC_POOL) - expected
    assert len(s.unlabeled) == 78 - len(expected)
    groups = [set(s.labeled), set(s.unlabeled), set(s.validation), set(s.test)]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
    assert set().union(*groups) == set(ACDC_ALL)


def test_acdc_paper_subset_counts(acdc):
    assert [k for k in acdc["labeled"]["L1"] if k != "fraction"] == ["c1", "c2", "c3", "c4", "c5"]
    assert [k for k in acdc["labeled"]["L2"] if k != "fraction"] == ["c1", "c2", "c3", "c4", "c5"]
    assert [k for k in acdc["labeled"]["L8"] if k != "fraction"] == ["c1", "c2", "c3"]


def test_acdc_paper_l100_labels_whole_pool(acdc):
    s = acdc_splits(acdc, ACDC_ALL, "L100", "c1")
    assert sorted(s.labeled) == ACDC_POOL
    assert len(s.labeled) == 78
    assert s.unlabeled == []
    assert s.validation == ACDC_VAL and s.test == ACDC_TEST


def test_acdc_missing_cases_raise_listing_them(acdc):
    present = [c for c in ACDC_ALL if c not in ("patient007", "patient050", "patient099")]
    with pytest.raises(ProtocolError) as err:
        acdc_splits(acdc, present, "L8", "c1")
    msg = str(err.value)
    for case in ("patient007", "patient050", "patient099"):
        assert case in msg
    assert "patient001" not in msg
    assert "allow-missing" in msg


def test_acdc_allow_missing_drops_and_reports(acdc):
    present = [c for c in ACDC_ALL if c not in set(ACDC_TEST) | {"patient003", "patient031"}]
    s = acdc_splits(acdc, present, "L8", "c1", allow_missing=True)
    assert sorted(s.missing) == sorted(ACDC_TEST + ["patient003", "patient031"])
    assert s.test == []
    assert s.validation == ["patient071"]
    assert set(s.labeled) == _ids([2, 22, 42, 62, 95, 23, 43])
    assert "patient003" not in s.unlabeled
    assert set(s.unlabeled) == set(ACDC_POOL) - _ids(PAPER_SUBSETS[("L8", "c1")])


def test_acdc_no_labeled_case_present_errors(acdc):
    present = [c for c in ACDC_ALL if c != "patient002"]
    with pytest.raises(ProtocolError, match="none of the labeled cases"):
        acdc_splits(acdc, present, "L1", "c1", allow_missing=True)


def test_acdc_unknown_labeled_set_and_subset(acdc):
    with pytest.raises(ProtocolError, match="no labeled set 'L3'") as err:
        acdc_splits(acdc, ACDC_ALL, "L3", "c1")
    assert "L1" in str(err.value) and "L100" in str(err.value)
    with pytest.raises(ProtocolError, match="no subset 'c4'") as err:
        acdc_splits(acdc, ACDC_ALL, "L8", "c4")
    assert "c1" in str(err.value)
    with pytest.raises(ProtocolError, match="no subset 'fraction'"):
        acdc_splits(acdc, ACDC_ALL, "L8", "fraction")


def test_acdc_labeled_outside_pool_rejected(acdc):
    bad = json.loads(json.dumps(acdc))
    bad["labeled"]["L1"]["c1"] = [7]  # a test patient
    with pytest.raises(ProtocolError, match="outside the training pool"):
        acdc_splits(bad, ACDC_ALL, "L1", "c1")


def test_synthetic_acdc_protocol_splits():
    proto = load_protocol("synthetic_acdc")
    present = [f"patient{n:03d}" for n in range(1, 21)]
    s = acdc_splits(proto, present, "L2", "c1")
    assert s.labeled == ["patient001", "patient002"]
    assert s.validation == ["patient015", "patient016"]
    assert s.test == [f"patient{n:03d}" for n in range(17, 21)]
    assert s.unlabeled == [f"patient{n:03d}" for n in range(3, 15)]


# ---------------------------------------------------------------------------------------------------------------
# mmwhs_paper
# ---------------------------------------------------------------------------------------------------------------


def _num_slices():
    return {c: 20 + 3 * i for i, c in enumerate(MMWHS_TRAIN)}  # 20..41, 244 slices in all


def test_mmwhs_paper_case_split(mmwhs):
    s = mmwhs_splits(mmwhs, MMWHS_ALL, "F10", _num_slices())
    assert s.unlabeled == MMWHS_TRAIN
    assert s.validation == ["mr_train_1009", "mr_train_1010"]
    assert s.test == [f"mr_train_{n}" for n in range(1011, 1021)]
    assert len(s.unlabeled) == 8 and len(s.validation) == 2 and len(s.test) == 10
    assert set(s.labeled) <= set(MMWHS_TRAIN)
    assert not (set(MMWHS_TRAIN) & (set(s.validation) | set(s.test)))
    assert not set(s.validation) & set(s.test)
    assert s.missing == []


@pytest.mark.parametrize("fraction,value", [("F10", 0.1), ("F20", 0.2), ("F40", 0.4)])
def test_mmwhs_slice_fraction_size_and_validity(mmwhs, fraction, value):
    num = _num_slices()
    total = sum(num.values())
    s = mmwhs_splits(mmwhs, MMWHS_ALL, fraction, num, seed=0)
    chosen = [(c, z) for c, zs in s.labeled_slices.items() for z in zs]
    assert len(chosen) == round(value * total)
    assert len(set(chosen)) == len(chosen)
    for case, zs in s.labeled_slices.items():
        assert zs == sorted(zs)
        assert all(0 <= z < num[case] for z in zs)
    assert s.labeled == sorted(s.labeled_slices)


def test_mmwhs_slice_fraction_seeded(mmwhs):
    num = _num_slices()
    a = mmwhs_splits(mmwhs, MMWHS_ALL, "F10", num, seed=0)
    b = mmwhs_splits(mmwhs, MMWHS_ALL, "F10", num, seed=0)
    c = mmwhs_splits(mmwhs, MMWHS_ALL, "F10", num, seed=1)
    assert a.labeled_slices == b.labeled_slices
    assert a.labeled_slices != c.labeled_slices
    # the draw covers several volumes, not a block of one
    assert len(a.labeled) > 1


def test_mmwhs_f100_labels_every_slice(mmwhs):
    num = _num_slices()
    s = mmwhs_splits(mmwhs, MMWHS_ALL, "F100", num)
    assert s.labeled == MMWHS_TRAIN
    assert s.labeled_slices == {c: list(range(n)) for c, n in num.items()}


def test_mmwhs_numeric_fraction_and_errors(mmwhs):
    num = _num_slices()
    s = mmwhs_splits(mmwhs, MMWHS_ALL, "0.25", num)
    assert sum(len(v) for v in s.labeled_slices.values()) == round(0.25 * sum(num.values()))
    with pytest.raises(ProtocolError, match="no fraction 'F15'") as err:
        mmwhs_splits(mmwhs, MMWHS_ALL, "F15", num)
    assert "F10" in str(err.value)
    with pytest.raises(ProtocolError, match=r"\(0, 1\]"):
        mmwhs_splits(mmwhs, MMWHS_ALL, "1.5", num)
    with pytest.raises(ProtocolError, match=r"\(0, 1\]"):
        mmwhs_splits(mmwhs, MMWHS_ALL, "0", num)


def test_mmwhs_missing_cases(mmwhs):
    present = MMWHS_TRAIN[:3]
    num = {c: 10 for c in present}
    with pytest.raises(ProtocolError) as err:
        mmwhs_splits(mmwhs, present, "F10", num)
    assert "mr_train_1004" in str(err.value) and "mr_train_1020" in str(err.value)
    s = mmwhs_splits(mmwhs, present, "F10", num, allow_missing=True)
    assert len(s.missing) == 17 and "mr_train_1009" in s.missing
    assert s.unlabeled == present
    assert s.validation == [] and s.test == []
    assert sum(len(v) for v in s.labeled_slices.values()) == 3  # 10% of 30 slices
    with pytest.raises(ProtocolError, match="no training case"):
        mmwhs_splits(mmwhs, ["mr_train_1015"], "F10", {}, allow_missing=True)


# ---------------------------------------------------------------------------------------------------------------
# folder protocol and label mapping
# ---------------------------------------------------------------------------------------------------------------


def test_random_case_splits_partition_and_sizes():
    cases = [f"case{i:02d}" for i in range(20)]
    s = random_case_splits(cases, labeled_fraction=0.25, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert len(s.test) == 4 and len(s.validation) == 2
    assert len(s.labeled) == 4 and len(s.unlabeled) == 10  # 25% of the 14-case pool (3.5 rounds to 4)
    parts = [set(s.labeled), set(s.unlabeled), set(s.validation), set(s.test)]
    assert sum(len(p) for p in parts) == 20
    assert set().union(*parts) == set(cases)
    for part in (s.labeled, s.unlabeled, s.validation, s.test):
        assert part == sorted(part)


def test_random_case_splits_seeded_and_order_independent():
    cases = [f"case{i:02d}" for i in range(30)]
    a = random_case_splits(cases, 0.1, 0.1, 0.2, seed=0)
    b = random_case_splits(list(reversed(cases)), 0.1, 0.1, 0.2, seed=0)
    c = random_case_splits(cases, 0.1, 0.1, 0.2, seed=1)
    assert (a.labeled, a.unlabeled, a.validation, a.test) == (b.labeled, b.unlabeled, b.validation, b.test)
    assert (a.labeled, a.test) != (c.labeled, c.test)


def test_random_case_splits_at_least_one_labeled_and_errors():
    s = random_case_splits(["a", "b", "c"], 0.01, 0.0, 0.0)
    assert len(s.labeled) == 1 and len(s.unlabeled) == 2
    with pytest.raises(ProtocolError, match="labeled fraction"):
        random_case_splits(["a", "b"], 0.0, 0.1, 0.1)
    with pytest.raises(ProtocolError, match="validation \\+ test"):
        random_case_splits(["a", "b"], 0.5, 0.5, 0.5)
    with pytest.raises(ProtocolError, match="validation \\+ test"):
        random_case_splits(["a", "b"], 0.5, -0.1, 0.1)
    with pytest.raises(ProtocolError, match="no training cases left"):
        random_case_splits(["a", "b"], 0.5, 0.4, 0.4)


def test_label_mapping(mmwhs, acdc):
    assert label_mapping(mmwhs) == {0: 0, 205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}
    assert label_mapping(acdc) == {0: 0, 1: 1, 2: 2, 3: 3}
