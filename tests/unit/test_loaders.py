"""Benchmark loaders: exact record counts and gold answers against the real files; clear errors on bad input."""

import json

import pytest

from mmos_ray.core.errors import DataError
from mmos_ray.core.problems import DATASETS
from mmos_ray.loaders import load_problems

SPLITS = [(name, split) for name, spec in DATASETS.items() for split in spec.splits]


@pytest.mark.parametrize("dataset, split", SPLITS, ids=[f"{d}/{s}" for d, s in SPLITS])
def test_record_counts_match_the_reference_release(data_dir, dataset, split):
    problems = load_problems(dataset, split, data_dir=data_dir)
    assert len(problems) == DATASETS[dataset].splits[split].expected
    assert [p.id for p in problems] == [f"{dataset}/{split}/{i}" for i in range(len(problems))]
    assert all(p.question for p in problems)


# (problem id, normalised gold, the source's own answer text); checked against the files below too.
GOLDS = [
    ("gsm8k/train/0", "72", "72"),
    ("gsm8k/train/345", "1080", "1,080"),
    ("gsm8k/test/17", "57500", "57500"),
    ("gsm8k/test/1318", "14", "14"),
    ("math/train/7499", "92", "92"),
    ("math/test/2", "\\frac{9}{7}", "\\dfrac{9}{7}"),
    ("math/test/8", "4,6,14,15", "4,6,14,15"),
    ("math/test/4999", "\\begin{pmatrix}1\\-2\\-1\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ -2 \\\\ -1 \\end{pmatrix}"),
    ("math500/test/0", "(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("math500/test/499", "106", "106^\\circ"),
    ("svamp/test/0", "145", "145"),
    ("svamp/test/999", "91", "91"),
    ("asdiv/test/0", "9", "9"),
    ("asdiv/test/2214", "40", "40"),
    ("asdiv-a/test/1217", "40", "40"),
    ("gsm-hard/test/0", "-9867630", "-9867630"),
    ("gsm-hard/test/7", "3244047.0999999996", "3244047.0999999996"),
    ("mawps/test/0", "43", "43"),
    ("mawps/singleop/561", "7.5", "7.5"),
    ("mawps/multiarith/599", "2", "2"),
    ("tabmwp/test1k/1", "shortage", "shortage"),
    ("tabmwp/test1k/3", "4656", "4,656"),
    ("tabmwp/test1k/62", "0.3", "3/10"),
]


@pytest.mark.parametrize("problem_id, gold, raw", GOLDS, ids=[g[0] for g in GOLDS])
def test_gold_answers(data_dir, problem_id, gold, raw):
    dataset, split, index = problem_id.split("/")
    problem = load_problems(dataset, split, data_dir=data_dir, limit=int(index) + 1)[-1]
    assert problem.id == problem_id
    assert (problem.gold, problem.meta["gold_raw"]) == (gold, raw)


def test_raw_answers_come_from_the_source_lines(data_dir):
    # Independent of the parser: read the lines themselves.
    gsm8k = (data_dir / "gsm8k/train.jsonl").read_text().splitlines()
    assert json.loads(gsm8k[345])["answer"].endswith("#### 1,080")
    tabmwp = list(json.loads((data_dir / "tabmwp/problems_test1k.json").read_text()).values())
    assert tabmwp[62]["answer"] == "3/10"
    math = (data_dir / "math/test.jsonl").read_text().splitlines()
    assert "\\boxed{\\dfrac{9}{7}}" in json.loads(math[2])["solution"]


def test_question_text_per_dataset(data_dir):
    svamp = load_problems("svamp", data_dir=data_dir, limit=1)[0]
    assert svamp.question.startswith("There are 87 oranges") and ". How big is each group of bananas?" in svamp.question
    asdiv = load_problems("asdiv", data_dir=data_dir, limit=1)[0]
    assert asdiv.question == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    tab = load_problems("tabmwp", "test1k", data_dir=data_dir, limit=2)
    assert tab[0].question.startswith('Read the following table regarding "Coin collections" and answer a question:\n')
    assert tab[1].question.endswith("Please select from the following options: ['shortage', 'surplus']")
    math = load_problems("math", "test", data_dir=data_dir, limit=1)[0]
    assert math.meta["level"] == "Level 3" and math.meta["type"] == "Algebra"
    hard = load_problems("gsm-hard", data_dir=data_dir, limit=1)[0]
    assert "def solution" in hard.meta["code"]


def test_empty_boxed_gold_is_kept_with_a_warning(data_dir, caplog):
    problems = load_problems("math", "train", data_dir=data_dir, limit=5530)
    assert problems[5529].gold == ""
    assert "math/train/5529 has no usable gold answer" in caplog.text


# --- bad input, on small files written here -------------------------------------------------------

def _write(tmp_path, relative, text):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "gsm8k/test.jsonl", '{"question": "q", "answer": "x #### 1"}\n{"question": \n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        load_problems("gsm8k", "test", data_dir=tmp_path)


def test_missing_field_names_field_and_dataset(tmp_path):
    path = _write(tmp_path, "svamp/test.jsonl", '{"Body": "b", "Question": "q"}\n')
    with pytest.raises(DataError, match=rf"{path}:1: missing field 'Answer', which dataset 'svamp' needs"):
        load_problems("svamp", data_dir=tmp_path)


def test_gsm8k_answer_without_final_line(tmp_path):
    _write(tmp_path, "gsm8k/test.jsonl", '{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: its 'answer' has no final '#### <number>' line"):
        load_problems("gsm8k", "test", data_dir=tmp_path)


def test_empty_file_is_an_error(tmp_path):
    _write(tmp_path, "mawps/test.jsonl", "")
    with pytest.raises(DataError, match="holds no records"):
        load_problems("mawps", data_dir=tmp_path)


def test_missing_file_says_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k/test: no file in .* \(looked for gsm8k/test.jsonl, gsm8k/test.json"):
        load_problems("gsm8k", "test", data_dir=tmp_path)


def test_parquet_and_json_inputs(tmp_path):
    from mmos_ray import storage

    storage.write_parquet(tmp_path / "mawps/test.parquet", [{"input": "1+1?", "target": 2.0, "type": "addsub"}])
    _write(tmp_path, "svamp/test.json", json.dumps([{"Body": "Tom has 3", "Question": "How many?", "Answer": 3.0}]))
    assert load_problems("mawps", data_dir=tmp_path)[0].gold == "2"
    assert load_problems("svamp", data_dir=tmp_path)[0].question == "Tom has 3. How many?"


def test_unknown_dataset_and_split_suggest_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'gsm8' \(did you mean 'gsm8k'\?\)"):
        load_problems("gsm8", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"no split 'tset' \(did you mean 'test'\?\)"):
        load_problems("gsm8k", "tset", data_dir=tmp_path)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass --data-dir"):
        load_problems("gsm8k", data_dir=tmp_path / "nope")


def test_a_generated_file_is_read_by_path_and_named_after_it(tmp_path):
    row = {"question": "Tom has 812 apples and buys 95 more. How many?", "answer": "#### 907",
           "source_id": "gsm8k/test/9", "mode": "large", "seed": 4}
    path = _write(tmp_path, "out/gsm8k-large.jsonl", json.dumps(row) + "\n" + json.dumps(row) + "\n")
    problems = load_problems("generated", path=path)
    assert [p.id for p in problems] == ["generated/gsm8k-large/0", "generated/gsm8k-large/1"]
    assert (problems[0].gold, problems[0].meta["source_id"], problems[0].meta["seed"]) == ("907", "gsm8k/test/9", 4)
    assert load_problems("generated", "mine", path=path, limit=1)[0].id == "generated/mine/0"
    with pytest.raises(DataError, match=r"generated: no file at .*nope.jsonl; give the path"):
        load_problems("generated", path=tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"dataset 'generated' is read from a file: give its path"):
        load_problems("generated", data_dir=tmp_path)


def test_a_generated_source_needs_its_path():
    from pydantic import ValidationError

    from mmos_ray.config import SourceConfig

    assert SourceConfig(dataset="generated", path="runs/g/large.jsonl").name == "generated/large"
    assert SourceConfig(dataset="gsm8k", path="mine.jsonl", split="mine-v2").name == "gsm8k/mine-v2"
    with pytest.raises(ValidationError, match="dataset 'generated' is read from a file: add `path: FILE`"):
        SourceConfig(dataset="generated")
    with pytest.raises(ValidationError, match=r"has no split 'tset' \(did you mean 'test'\?\)"):
        SourceConfig(dataset="gsm8k", split="tset")


def test_eval_benchmarks_take_a_generated_file_by_path(tmp_path):
    from mmos_ray.config import load_config
    from mmos_ray.pipeline import _benchmark_source

    cfg = load_config(None)
    path = _write(tmp_path, "gsm8k-large.jsonl", '{"question": "q", "answer": "#### 1"}\n')
    source = _benchmark_source(cfg, str(path))
    assert (source.dataset, source.path, source.name) == ("generated", path, "generated/gsm8k-large")
    assert _benchmark_source(cfg, "mawps/singleeq").name == "mawps/singleeq"
    with pytest.raises(DataError, match=r"benchmark 'svamp/tset': dataset 'svamp' has no split 'tset'"):
        _benchmark_source(cfg, "svamp/tset")
