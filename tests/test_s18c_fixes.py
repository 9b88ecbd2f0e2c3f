"""s18c: the mask formats' one early hook (``MaskFormat.check_head(head, path, size, limits)``, which
replaced ``check_head`` + ``check_layout``), and YAML-tag refusals that name the kind of file (a label
map, a protocol file, a model card; not always "submission files")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets.formats import FORMATS
from cardbench.datasets.formats.base import HEAD_BYTES, MaskFormat, MaskReadError, read_file_bytes
from cardbench.limits import get_limits

# --- 1. one early hook ---------------------------------------------------------------------------


def test_read_file_bytes_calls_the_one_hook_once_with_head_and_size(tmp_path):
    calls = []

    def hook(head, path, size, limits):
        calls.append((head, Path(path), size, limits))

    lim = get_limits()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 12)  # 3072 bytes
    assert read_file_bytes(big, lim, check_head=hook) == bytes(range(256)) * 12
    assert len(calls) == 1
    head, path, size, limits = calls[0]
    assert head == bytes(range(256)) * 4 and len(head) == HEAD_BYTES == 1024  # the first KiB only
    assert (path, size, limits) == (big, 3072, lim)

    small = tmp_path / "small.bin"
    small.write_bytes(b"0123456789")
    calls.clear()
    read_file_bytes(small, lim, check_head=hook)
    assert [(c[0], c[2]) for c in calls] == [(b"0123456789", 10)]  # the whole file, its size


def test_a_refusal_of_the_hook_stops_the_read(tmp_path):
    def hook(head, path, size, limits):
        raise MaskReadError(path, f"refused after {len(head)} of {size} bytes", "fix")

    f = tmp_path / "f.bin"
    f.write_bytes(b"\x01" * 5000)
    with pytest.raises(MaskReadError, match=r"f\.bin: refused after 1024 of 5000 bytes; fix"):
        read_file_bytes(f, check_head=hook)


def test_every_format_has_the_one_hook_only():
    """The four-argument hook on every registered format; the old second hook is gone, so a format
    that still defines it would be a check nobody calls."""
    import inspect

    assert not hasattr(MaskFormat, "check_layout")
    for fmt in FORMATS.values():
        assert not hasattr(fmt, "check_layout"), fmt.name
        assert list(inspect.signature(fmt.check_head).parameters) == ["head", "path", "size", "limits"], fmt.name


def _nifti_bytes(cls=nib.Nifti1Image) -> bytes:
    return cls(np.zeros((8, 8, 3), np.uint8), np.eye(4)).to_bytes()


@pytest.mark.parametrize("cls,start", [(nib.Nifti1Image, 352), (nib.Nifti2Image, 544)])
def test_nifti_hook_checks_the_size_it_is_given(tmp_path, cls, start):
    """The layout is decided from the head and the size passed in, not from the bytes at hand.
    An (8, 8, 3) uint8 image: 192 bytes of data after vox_offset 352 (NIfTI-1) or 544 (NIfTI-2)."""
    data = _nifti_bytes(cls)
    expected = start + 8 * 8 * 3
    assert len(data) == expected  # 544 / 736, as nibabel writes it
    path = tmp_path / "case_frame01.nii"
    fmt, lim = FORMATS["nifti"], get_limits()
    fmt.check_head(data, path, expected, lim)  # the header's own size: accepted
    declares = f"its header declares {expected} bytes (vox_offset {start} + shape (8, 8, 3) x 1 bytes per voxel)"
    with pytest.raises(MaskReadError) as e:
        fmt.check_head(data, path, expected + 7, lim)
    assert str(e.value).startswith(f"{path}: 7 bytes after the image data: the file has {expected + 7} bytes, "
                                   f"{declares}; re-export the mask")
    with pytest.raises(MaskReadError) as e:
        fmt.check_head(data, path, expected - 10, lim)
    assert f"image data truncated: the file has {expected - 10} bytes, {declares}; 182 of 192 bytes" in str(e.value)
    with pytest.raises(MaskReadError, match="header declares 192 bytes of image data .* above the limit of 191"):
        fmt.check_head(data, path, expected, dataclasses.replace(lim, max_mask_bytes=191))


def test_nifti_hook_magic_message_is_the_whole_file_check(tmp_path):
    """Bytes that are no NIfTI: the hook's message is the one ``check_bytes`` gives on the whole file."""
    path = tmp_path / "case_frame01.nii"
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 3000
    with pytest.raises(MaskReadError) as whole:
        FORMATS["nifti"].check_bytes(data, path)
    with pytest.raises(MaskReadError) as early:
        FORMATS["nifti"].check_head(data[:HEAD_BYTES], path, len(data), get_limits())
    assert str(early.value) == str(whole.value)
    assert "named .nii but the content is a PNG image, not NIfTI" in str(early.value)


# --- 2. YAML tags: the message names the kind of file ------------------------------------------------

def _tagged(tmp_path, name: str, key: str) -> tuple[Path, Path]:
    """A YAML file whose value would run ``touch <marker>`` if a tag were ever constructed."""
    marker = tmp_path / "executed"
    f = tmp_path / name
    f.write_text(f"{key}: !!python/object/apply:os.system ['touch {marker}']\n")
    return f, marker


def _one_line(res) -> str:
    out = res.stdout
    try:
        out += res.stderr
    except ValueError:  # click without separate stderr
        pass
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, out
    assert "Traceback" not in out
    return lines[0]


def _ref(tmp_path) -> Path:
    ref = tmp_path / "ref"
    ref.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), ref / "case_frame01.nii.gz")
    return ref


TAG = "uses the YAML tag !!python/object/apply:os.system (line 1)"
NEVER = "(nothing in a YAML file given to cardbench is ever executed)"


def test_score_labels_file_with_tag_names_a_label_map(tmp_path):
    ref = _ref(tmp_path)
    lm, marker = _tagged(tmp_path, "map.yaml", "labels")
    line = _one_line(CliRunner().invoke(app, ["score", str(ref), "-r", str(ref), "--labels", str(lm), "--no-save"],
                                        env={"COLUMNS": "400"}))
    assert line.startswith(f"error: {lm}: label map file: {TAG}; YAML tags are not allowed in a label map file "
                           f"{NEVER}. Fix: remove the tag and write plain keys and values"), line
    assert "submission" not in line and not marker.exists()


def test_score_protocol_file_with_tag_names_a_protocol_file(tmp_path):
    ref = _ref(tmp_path)
    pr, marker = _tagged(tmp_path, "p.yaml", "name")
    line = _one_line(CliRunner().invoke(app, ["score", str(ref), "-r", str(ref), "--protocol", str(pr),
                                              "--no-save"], env={"COLUMNS": "400"}))
    assert line.startswith(f"error: {pr}: not valid YAML for cardbench: {TAG}; YAML tags are not allowed in a "
                           f"protocol file {NEVER}; remove the tag and write plain keys and values"), line
    assert "submission" not in line and "fix the syntax" not in line and not marker.exists()


def test_model_card_and_submission_yaml_tags_name_their_file(tmp_path):
    from cardbench._yamlsafe import _load_small_yaml, _YamlRefused
    from cardbench.evaluate.modelcard import ModelCardError, load_model_card

    card, marker = _tagged(tmp_path, "model.yaml", "name")
    with pytest.raises(ModelCardError) as e:
        load_model_card(card)
    assert str(e.value) == (f"{card}: not valid YAML for cardbench: {TAG}; YAML tags are not allowed in a model "
                            f"card {NEVER}; remove the tag and write plain keys and values")
    sub, _ = _tagged(tmp_path, "submission.yaml", "name")
    with pytest.raises(_YamlRefused) as e:
        _load_small_yaml(sub, get_limits())  # the default noun: submission.yaml
    assert e.value.what == f"{TAG}; YAML tags are not allowed in submission.yaml {NEVER}"
    assert not marker.exists()


def test_label_map_file_inside_a_submission_with_tag(tmp_path):
    """``label_map: m.yaml`` in submission.yaml, the file holding a tag: the problem names
    submission.yaml, the label map file and the tag, and its fix is to remove the tag."""
    ref = _ref(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "case_frame01.nii.gz").write_bytes((ref / "case_frame01.nii.gz").read_bytes())
    lm, marker = _tagged(sub, "m.yaml", "labels")
    (sub / "submission.yaml").write_text("name: x\nlabel_map: m.yaml\n")
    res = CliRunner().invoke(app, ["score", str(sub), "-r", str(ref), "--no-save"], env={"COLUMNS": "400"})
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 2 and "Traceback" not in res.output, res.output
    assert lines[0] == (f"error: {sub / 'submission.yaml'}: label_map 'm.yaml': {TAG}; YAML tags are not allowed "
                        f"in a label map file {NEVER}. Fix: remove the tag and write plain keys and values")
    assert "nothing was scored" in lines[1] and not marker.exists()


def test_label_map_file_syntax_and_encoding_fixes_point_at_the_label_map_docs(tmp_path):
    """A label map file's syntax or encoding problem points at the label map page, not at
    submission.yaml's."""
    from cardbench.labelmaps import get_label_map

    lm = tmp_path / "m.yaml"
    lm.write_text("labels: [unclosed\n")
    with pytest.raises(ValueError) as e:
        get_label_map(str(lm))
    assert str(e.value).startswith(f"{lm}: label map file: not valid YAML ")
    assert str(e.value).endswith("Fix: fix the syntax (see docs/extending.md, Adding a label map)")
    lm.write_bytes(b"labels: {background: 0, LV: \xff}\n")  # 0xff: no UTF-8
    with pytest.raises(ValueError, match=r"m\.yaml: label map file: not UTF-8 text\. Fix: save it as UTF-8 "
                                         r"\(see docs/extending\.md, Adding a label map\)$"):
        get_label_map(str(lm))
    assert "## Adding a label map" in (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()


def _deep_and_bomb(tmp_path) -> tuple[Path, Path]:
    """A file nested 5,000 levels deep, and an alias bomb: 10 values, then 8 levels of 10 aliases of
    the level below (10**9 values once expanded; a few hundred bytes)."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    return deep, bomb


def test_protocol_file_deep_or_alias_bomb_is_refused_naming_it(tmp_path):
    """A --protocol file is checked for nesting and alias expansion before it is parsed (before, the
    deep one gave a line that did not name the file)."""
    ref = _ref(tmp_path)
    lim = get_limits()
    for f, what in zip(_deep_and_bomb(tmp_path), (f"nested deeper than {lim.max_meta_depth} levels",
                                                  f"more than {lim.max_meta_nodes} values after expanding")):
        line = _one_line(CliRunner().invoke(app, ["score", str(ref), "-r", str(ref), "--protocol", str(f),
                                                  "--no-save"], env={"COLUMNS": "400"}))
        assert line.startswith(f"error: {f}: {what}"), line


def test_model_card_deep_or_alias_bomb_is_refused_naming_it(tmp_path):
    from cardbench.evaluate.modelcard import ModelCardError, load_model_card

    lim = get_limits()
    for f, what in zip(_deep_and_bomb(tmp_path), (f"nested deeper than {lim.max_meta_depth} levels",
                                                  f"more than {lim.max_meta_nodes} values after expanding")):
        with pytest.raises(ModelCardError) as ei:
            load_model_card(f)
        assert str(ei.value).startswith(f"{f}: {what}") and "\n" not in str(ei.value)
