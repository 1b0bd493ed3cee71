"""Tables users hand in: every reader (teacher tables, manifests, pair tables; CSV and JSON
lines) takes a UTF-8 byte-order mark, and refuses other encodings, other separators and
shifted rows with its own error naming the file and what was found."""

import codecs
import json

import pandas as pd
import pytest

from w2s_vqa import cli
from w2s_vqa.labels.pair_table import PairTableError, read_pairs
from w2s_vqa.labels.teachers import TeacherTableError, read_teacher_table
from w2s_vqa.store.format import StoreError
from w2s_vqa.store.sources import read_manifest
from w2s_vqa.tables import ProblemReport, collect_notes, TableWarning

# Ids that a careless reader would break: non-ASCII, leading zeros, pandas' "NA".
TEACHER_ROWS = [{"video_id": "café", "teacher": "dover", "score": 0.5},
                {"video_id": "007", "teacher": "dover", "score": 0.7},
                {"video_id": "NA", "teacher": "niqe", "score": 3.5}]
MANIFEST_ROWS = [{"path": "clips/café.mp4", "id": "café"}, {"path": "clips/b.mp4", "id": "007"}]
PAIR_ROWS = [{"first_id": "café", "second_id": "007", "label": 1, "origin": "teacher", "stage": 1, "weight": 0.5},
             {"first_id": "NA", "second_id": "café", "label": 3, "origin": "teacher", "stage": 1, "weight": 1.0}]


def csv_text(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# name -> (reader, its error type, the table as UTF-8 text)
READERS = {
    "teachers.csv": (read_teacher_table, TeacherTableError, csv_text(TEACHER_ROWS)),
    "teachers.jsonl": (read_teacher_table, TeacherTableError, jsonl_text(TEACHER_ROWS)),
    "manifest.csv": (lambda p: read_manifest(str(p)), StoreError, csv_text(MANIFEST_ROWS)),
    "manifest.jsonl": (lambda p: read_manifest(str(p)), StoreError, jsonl_text(MANIFEST_ROWS)),
    "pairs.csv": (read_pairs, PairTableError, csv_text(PAIR_ROWS)),
    "pairs.jsonl": (read_pairs, PairTableError, jsonl_text(PAIR_ROWS)),
}


def assert_same(got, want):
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
    else:
        assert got == want


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_utf8_byte_order_mark_is_read_as_if_absent(tmp_path, name):
    """Excel's 'CSV UTF-8' and PowerShell 5 write one; the first row (or column) must survive it."""
    reader, _, text = READERS[name]
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / name).write_bytes(text.encode("utf-8"))
    (tmp_path / "bom" / name).write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    plain = reader(tmp_path / "plain" / name)
    with_bom = reader(tmp_path / "bom" / name)
    if name.startswith("manifest"):  # paths resolve next to each manifest
        plain = [(s.id, s.source_id, s.path.replace("/plain/", "/")) for s in plain]
        with_bom = [(s.id, s.source_id, s.path.replace("/bom/", "/")) for s in with_bom]
        assert [i for i, _, _ in plain] == ["café", "007"]
    else:
        first = "video_id" if name.startswith("teachers") else "first_id"
        assert plain[first].tolist()[:2] == ["café", "007" if first == "video_id" else "NA"]
        assert len(plain) == len(TEACHER_ROWS if name.startswith("teachers") else PAIR_ROWS)
    assert_same(with_bom, plain)


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("encoding,found", [
    ("utf-16", "looks like UTF-16 text (byte-order mark FF FE), as Excel's 'Unicode text' and Windows PowerShell"),
    ("utf-16-be-bom", "looks like UTF-16 text (byte-order mark FE FF)"),
    ("utf-32", "looks like UTF-32 text (byte-order mark FF FE 00 00)"),
    ("utf-16-le", "holds NUL bytes (in the header): UTF-16 text without a byte-order mark"),
    ("cp1252", "is not UTF-8 text: byte 0xE9 (in data row 1) is not valid UTF-8; it decodes as Windows-1252"),
])
def test_other_encodings_get_the_tables_own_error_naming_the_file_and_what_was_found(
        tmp_path, name, encoding, found):
    reader, error, text = READERS[name]
    path = tmp_path / name
    if encoding == "utf-16-be-bom":
        path.write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    else:
        path.write_bytes(text.encode(encoding))
    if name.endswith(".jsonl"):
        found = found.replace("in the header", "in row 1").replace("in data row 1", "in row 1")
    with pytest.raises(error) as caught:
        reader(path)
    assert not isinstance(caught.value, UnicodeError)
    message = str(caught.value)
    assert message.startswith(f"{path}: the ") and found in message and "save it as UTF-8" in message


@pytest.mark.parametrize("name,text,found", [
    ("teachers.csv", "video_id;dover;niqe\na;0,35;4,5\nb;0,5;3\n",
     "separated by ';', not ',' (header: 'video_id', 'dover', 'niqe'), and numbers with a decimal comma "
     "(data row 1: '0,35'), as Excel writes CSV where ',' is the decimal mark; save it with ',' between columns "
     "and '.' as the decimal mark (pandas: pd.read_csv(PATH, sep=';', decimal=',')"),
    ("pairs.csv", "first_id;second_id;label;origin;stage;weight\na;b;1;teacher;1;0,5\n",
     "separated by ';', not ',' (header: 'first_id', 'second_id', 'label', 'origin', ...), and numbers with a "
     "decimal comma (data row 1: '0,5')"),
    ("manifest.csv", "path;id\na.mp4;a\n", "separated by ';', not ',' (header: 'path', 'id'); save it with ','"),
    ("teachers.csv", "video_id\tdover\na\t0.5\n", "separated by tabs, not ','"),
])
def test_a_table_separated_otherwise_is_named_with_its_decimal_commas(tmp_path, name, text, found):
    reader, error, _ = READERS[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(error) as caught:
        reader(tmp_path / name)
    assert str(caught.value).startswith(f"{tmp_path / name}: the ") and found in str(caught.value)


def test_unquoted_decimal_commas_are_refused_not_shifted_into_the_next_column(tmp_path):
    """pandas reads 'a,0,5' under a two-column header as index a, video_id 0, dover 5."""
    path = tmp_path / "teachers.csv"
    path.write_text("video_id,dover\na,0,5\nb,0.7\n\nc,0,9\n")
    with pytest.raises(TeacherTableError) as caught:
        read_teacher_table(path)
    message = str(caught.value)
    assert ("rows with more cells than the 2 of the header (2): row 1: 3 cells 'a,0,5'; row 3: 3 cells 'c,0,9'"
            in message)
    assert "numbers take '.' as the decimal mark" in message
    path.write_text('video_id,dover\n"a,0",0.5\nb,0.7,,\n')  # quoted commas and trailing delimiters are fine
    assert read_teacher_table(path)["video_id"].tolist() == ["a,0", "b"]


def test_files_that_are_no_text_table_are_named(tmp_path):
    (tmp_path / "teachers.csv").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(TeacherTableError, match="is a ZIP archive .an Excel .xlsx workbook.., not text"):
        read_teacher_table(tmp_path / "teachers.csv")
    (tmp_path / "pairs.csv").write_text("first_id,first_id,label\n")
    with pytest.raises(PairTableError, match="header names column.s. more than once: 'first_id'"):
        read_pairs(tmp_path / "pairs.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(StoreError, match="manifest is empty .not even a header line."):
        read_manifest(str(tmp_path / "empty.csv"))
    # A wide table saved with its row index: the nameless column is not taken for a teacher.
    pd.DataFrame({"video_id": ["a", "b"], "dover": [0.1, 0.2]}).to_csv(tmp_path / "wide.csv")
    with pytest.raises(TeacherTableError, match=r"columns without a name in the header \(1\): 'Unnamed: 0'"):
        read_teacher_table(tmp_path / "wide.csv")


def test_a_verb_given_a_utf16_manifest_ends_with_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "m.csv").write_bytes("path\na.mp4\n".encode("utf-16"))
    assert cli.main(["prepare", "--inputs", str(tmp_path / "m.csv"), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"w2s-vqa prepare: error: {tmp_path / 'm.csv'}: the manifest looks like UTF-16 text")
    assert "UnicodeDecodeError" not in err and "codec" not in err


def test_a_problem_report_states_the_row_convention_counts_all_and_shows_a_few():
    report = ProblemReport("t.csv", "table", max_examples=2)
    assert not report
    report.add("bad value", 3, (f"row {i}" for i in range(1, 4)), "Fix the values.")
    report.add("nothing", 0, [])
    assert report.total == 3
    assert report.message() == ("t.csv: 3 problem(s) in the table (rows are data rows counted from 1, the header "
                                "not counted): bad value (3), e.g. row 1\n"
                                "  - bad value (3): row 1; row 2; ... and 1 more\n    Fix the values.")
    # The first line stands alone: every kind with its count and first example.
    report.add("empty id", 1, ["row 7"])
    first = report.message().splitlines()[0]
    assert first.endswith("not counted): bad value (3), e.g. row 1; empty id (1), e.g. row 7")


def test_collect_notes_keeps_table_warnings_and_lets_others_through():
    import warnings

    with pytest.warns(DeprecationWarning, match="other"):
        with collect_notes() as notes:
            warnings.warn("skipped 2 scores", TableWarning)
            warnings.warn("skipped 2 scores", TableWarning)  # every one, not once per place
            warnings.warn("other", DeprecationWarning)
    assert notes == ["skipped 2 scores", "skipped 2 scores"]


def test_json_lines_end_at_newlines_only(tmp_path):
    """json.dumps(ensure_ascii=False) leaves U+2028 in a string; str.splitlines would break the line there."""
    path = tmp_path / "teachers.jsonl"
    path.write_text(jsonl_text([{"video_id": "a\u2028b", "teacher": "t", "score": 1.0},
                                {"video_id": "c", "teacher": "t", "score": 2.0}]), encoding="utf-8")
    assert read_teacher_table(path)["video_id"].tolist() == ["a\u2028b", "c"]


def test_the_columns_a_reader_knows_are_found_in_any_case_where_unambiguous(tmp_path):
    from w2s_vqa.tables import fold_columns, read_csv, read_jsonl

    (tmp_path / "t.csv").write_text("File, MOS ,Std\na.mp4,3.5,0.2\n")
    table = read_csv(tmp_path / "t.csv", what="MOS table", error=ValueError, columns=("file", "mos"))
    assert list(table.columns) == ["file", "mos", "Std"] and table["mos"].tolist() == ["3.5"]
    (tmp_path / "t.jsonl").write_text('{"PATH": "a.mp4", "Id": "a"}\n')
    table, rows = read_jsonl(tmp_path / "t.jsonl", what="manifest", error=ValueError, columns=("path", "id"))
    assert list(table.columns) == ["path", "id"] and rows == [1]
    # Ambiguous or already present: left as the table has it, for the table's own check to name.
    both = pd.DataFrame(columns=["MOS", "Mos"])
    assert list(fold_columns(both, ["mos"]).columns) == ["MOS", "Mos"]
    present = pd.DataFrame(columns=["mos", "MOS"])
    assert list(fold_columns(present, ["mos"]).columns) == ["mos", "MOS"]
    # Without `columns` nothing is renamed.
    assert list(read_csv(tmp_path / "t.csv", what="t", error=ValueError).columns) == ["File", " MOS ", "Std"]


def test_a_manifest_and_a_teacher_table_with_capital_headers_are_read(tmp_path):
    from w2s_vqa.labels.teachers import read_teacher_table
    from w2s_vqa.store.sources import read_manifest

    (tmp_path / "m.csv").write_text("Path,ID\nclips/a.mp4,first\n")
    (source,) = read_manifest(str(tmp_path / "m.csv"))
    assert (source.id, source.path) == ("first", str(tmp_path / "clips" / "a.mp4"))
    (tmp_path / "t.csv").write_text("Video_ID,Teacher,Score\na,dover,0.5\nb,dover,0.25\n")
    table = read_teacher_table(str(tmp_path / "t.csv"))
    assert table["video_id"].tolist() == ["a", "b"] and table["score"].tolist() == pytest.approx([0.5, 0.25])
