"""Every refusal of `model_export train` is exit status 2 and one `error: ` line on stderr,
saying what is wrong with which folder. Structural problems are found before a network loads;
the command runs in this process (the same `main` as `python -m model_export train`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from digits_run import train
from PIL import Image

from model_export.__main__ import main


def _image(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (shade, 255 - shade, 64)).save(path)


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(root / name / f"{i}.png", 40 * i)
    return root


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["train", *argv, "--output-dir", str(Path(argv[1]).parent / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_missing_folder(capsys, tmp_path: Path) -> None:
    err = _refused(capsys, "--data", str(tmp_path / "nowhere"))
    assert "nowhere: no such folder" in err


def test_an_empty_folder(capsys, tmp_path: Path) -> None:
    (tmp_path / "photos" / "cat").mkdir(parents=True)  # a class folder, but no images
    err = _refused(capsys, "--data", str(tmp_path / "photos"))
    assert "photos: empty" in err and "sub-folder named for the class" in err


def test_a_single_class(capsys, tmp_path: Path) -> None:
    data = _folder(tmp_path / "photos", {"cat": 5})
    err = _refused(capsys, "--data", str(data))
    assert "a single class (cat)" in err and "at least 2" in err


def test_a_class_with_fewer_than_two_images(capsys, tmp_path: Path) -> None:
    data = _folder(tmp_path / "photos", {"cat": 5, "dog": 1, "owl": 3})
    err = _refused(capsys, "--data", str(data))
    assert "fewer than 2 images: dog (1)" in err


def test_validation_classes_that_differ(capsys, tmp_path: Path) -> None:
    data = _folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    val = _folder(tmp_path / "val", {"cat": 2, "owl": 2})
    err = _refused(capsys, "--data", str(data), "--val-data", str(val))
    assert "classes differ" in err and "missing dog" in err and "not in --data: owl" in err


def test_a_class_left_with_one_readable_image_as_the_real_command(tmp_path: Path) -> None:
    """Two files, one of them not an image: caught after decoding, in a real process."""
    data = _folder(tmp_path / "photos", {"cat": 3, "dog": 1})
    (data / "dog" / "notes.txt").write_text("not a photo")
    done = train("--data", str(data), "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert done.stderr.rstrip().endswith(line)
    assert "fewer than 2 readable images: dog (1)" in line and "1 files skipped" in line


def test_help_answers_without_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--data" in out and "--unfreeze" in out and "20%" in out


def test_a_usage_error_is_one_line(capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", str(tmp_path), "--epochs", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --epochs must be at least 1") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--unfreeze", "10"], "--unfreeze 10: from 0 to 9 (lite0: the stem, 7 stages"),
        (["--variant", "b99"], "unknown variant 'b99'"),
    ],
)
def test_a_bad_variant_or_stage_count_is_one_line(capsys, tmp_path: Path, argv, needle) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", str(tmp_path), *argv])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
