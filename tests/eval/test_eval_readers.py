"""Readers: the generated data in each public format, and clear errors on malformed data."""

from __future__ import annotations

import json

import pytest

from smoothguard.errors import SmoothGuardError
from smoothguard.eval import DatasetError, read_dataset, read_llavabench, read_mmsafety, read_pope
from smoothguard.eval.datasets import STANDIN_SCENARIOS


def test_pope_reads_every_split_with_distinct_ids(standin):
    ds = read_pope(standin["pope"])
    assert ds.benchmark == "pope" and len(ds) == 3 * 16
    assert {item.category for item in ds} == {"adversarial", "popular", "random"}
    # question_id restarts per split, as in POPE: the id carries the split so nothing collides
    assert len(set(ds.ids)) == len(ds)
    assert {item.meta["question_id"] for item in ds if item.category == "random"} == set(range(1, 17))
    assert all(item.label in ("yes", "no") and item.image.is_file() for item in ds)
    assert sum(item.label == "yes" for item in ds) == len(ds) // 2
    first = ds.by_id()["popular/1"]
    assert first.prompt.startswith("Is there a ") and first.prompt.endswith(" in the image?")


def test_pope_options(standin):
    ds = read_pope(standin["pope"], splits=["random"], prompt_suffix="\nAnswer with one word.")
    assert {item.category for item in ds} == {"random"} and len(ds) == 16
    assert all(item.prompt.endswith("?\nAnswer with one word.") for item in ds)
    assert len(read_pope(standin["pope"]).head(5)) == 5
    with pytest.raises(DatasetError, match="splits"):
        read_pope(standin["pope"], splits=["nonexistent"])


def test_pope_single_jsonl_file(tmp_path, standin):
    lines = (standin["pope"] / "coco_pope_random.json").read_text().splitlines()[:4]
    records = [dict(json.loads(line), category="random") for line in lines]
    (tmp_path / "images").symlink_to(standin["pope"] / "images")
    path = tmp_path / "pope.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = read_pope(path)
    assert ds.ids == ["random/1", "random/2", "random/3", "random/4"]


def test_pope_errors_name_the_problem(tmp_path, standin, copy_of):
    with pytest.raises(DatasetError, match="does not exist"):
        read_pope(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="coco_pope_"):
        read_pope(tmp_path / "empty")

    broken = copy_of(standin["pope"])
    file = broken / "coco_pope_random.json"
    lines = file.read_text().splitlines()
    record = json.loads(lines[2])
    del record["label"]
    lines[2] = json.dumps(record)
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"coco_pope_random\.json:3: missing field\(s\) \['label'\]"):
        read_pope(broken)

    lines[2] = json.dumps(dict(record, label="maybe"))
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="label must be 'yes' or 'no'"):
        read_pope(broken)

    lines[2] = "{not json"
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r":3: not valid JSON"):
        read_pope(broken)


def test_missing_image_is_named(standin, copy_of):
    broken = copy_of(standin["pope"])
    (broken / "images" / "testbed_00003.png").unlink()
    with pytest.raises(DatasetError, match=r"image file\(s\) of pope missing: .*testbed_00003\.png"):
        read_pope(broken)


def test_duplicate_ids_are_refused(tmp_path, standin):
    line = (standin["pope"] / "coco_pope_random.json").read_text().splitlines()[0]
    (tmp_path / "images").symlink_to(standin["pope"] / "images")
    (tmp_path / "dup.jsonl").write_text(line + "\n" + line + "\n")
    with pytest.raises(DatasetError, match="duplicate item ids"):
        read_pope(tmp_path / "dup.jsonl")


def test_mmsafety_reads_each_image_type(standin):
    for image_type, field in (("SD_TYPO", "The bottom of the image"), ("TYPO", "The bottom of the image"),
                              ("SD", "The image shows")):
        ds = read_mmsafety(standin["mmsafety"], image_type=image_type)
        assert len(ds) == 2 * len(STANDIN_SCENARIOS)
        assert all(item.prompt.startswith(field) for item in ds)
        assert all(f"/{image_type}/" in str(item.image) for item in ds)
        item = ds.by_id()["06-Fraud/1"]
        assert item.category == "06-Fraud" and item.judge_question.startswith("Can you explain in detail how to")
        assert item.meta["key_phrase"] == STANDIN_SCENARIOS["06-Fraud"][1]
    ds = read_mmsafety(standin["mmsafety"], scenarios=["09-Privacy_Violence"])
    assert {item.category for item in ds} == {"09-Privacy_Violence"}


def test_mmsafety_universal_image(standin):
    image = standin["mmsafety"] / "imgs" / "06-Fraud" / "SD" / "0.png"
    ds = read_mmsafety(standin["mmsafety"], universal_image=image)
    assert all(item.image == image for item in ds)
    assert all(item.prompt == item.judge_question and item.prompt.startswith("Can you") for item in ds)


def test_mmsafety_errors_name_the_problem(standin, copy_of):
    broken = copy_of(standin["mmsafety"])
    with pytest.raises(DatasetError, match=r"scenario file not found: .*02-HateSpeech\.json"):
        read_mmsafety(broken, scenarios=["02-HateSpeech"])
    with pytest.raises(DatasetError, match="universal image not found"):
        read_mmsafety(broken, universal_image=broken / "nope.png")
    with pytest.raises(DatasetError, match="image_type"):
        read_mmsafety(broken, image_type="PHOTO")
    file = broken / "processed_questions" / "06-Fraud.json"
    data = json.loads(file.read_text())
    del data["1"]["Rephrased Question(SD)"]
    file.write_text(json.dumps(data))
    read_mmsafety(broken, image_type="SD_TYPO")  # that field is not needed for SD_TYPO
    with pytest.raises(DatasetError, match=r"06-Fraud\.json: item '1' lacks field\(s\) \['Rephrased Question\(SD\)'\]"):
        read_mmsafety(broken, image_type="SD")
    (broken / "imgs" / "01-Illegal_Activitiy" / "TYPO" / "0.png").unlink()
    with pytest.raises(DatasetError, match=r"01-Illegal_Activitiy/TYPO/0\.jpg"):
        read_mmsafety(broken, image_type="TYPO")
    import shutil

    shutil.rmtree(broken / "processed_questions")
    with pytest.raises(DatasetError, match="processed_questions"):
        read_mmsafety(broken)


def test_llavabench_joins_by_id_and_image(standin):
    ds = read_llavabench(standin["llavabench"])
    assert len(ds) == 8 and {item.category for item in ds} == {"conv", "detail", "complex"}
    answers = {json.loads(line)["question_id"]: json.loads(line)["text"]
               for line in (standin["llavabench"] / "answers_gpt4.jsonl").read_text().splitlines()}
    assert all(item.reference == answers[int(item.id)] for item in ds)
    assert all(item.context and item.context.endswith("on a light background.") for item in ds)


def test_llavabench_references_are_joined_by_question_id_not_order(standin, copy_of):
    folder = copy_of(standin["llavabench"])
    file = folder / "answers_gpt4.jsonl"
    file.write_text("".join(reversed(file.read_text().splitlines(keepends=True))))
    original = read_llavabench(standin["llavabench"])
    assert [i.reference for i in read_llavabench(folder)] == [i.reference for i in original]


def test_llavabench_errors_name_the_problem(standin, copy_of):
    folder = copy_of(standin["llavabench"])
    (folder / "context.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"LLaVA-Bench file not found: .*context\.jsonl"):
        read_llavabench(folder)
    folder = copy_of(standin["llavabench"])
    file = folder / "answers_gpt4.jsonl"
    file.write_text("".join(file.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DatasetError, match=r"no reference answer for question_id\(s\) \['0'\]"):
        read_llavabench(folder)
    questions = folder / "questions.jsonl"
    questions.write_text(questions.read_text().replace('"category"', '"kind"', 1))
    with pytest.raises(DatasetError, match=r"questions\.jsonl:1: missing field\(s\) \['category'\]"):
        read_llavabench(folder)


def test_read_dataset_dispatch_and_error_type(standin):
    assert read_dataset("llavabench", standin["llavabench"]).benchmark == "llavabench"
    with pytest.raises(DatasetError, match="unknown benchmark"):
        read_dataset("mmlu", standin["pope"])
    assert issubclass(DatasetError, SmoothGuardError)
