"""Config loading: every shipped YAML validates, overrides apply, and typos fail with the key's path."""

from pathlib import Path

import pytest

from mmos_ray.config import ConfigError, ExperimentConfig, dump_config, load_config, section_hash

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    dumped = tmp_path / path.name
    dumped.write_text(dump_config(cfg))
    assert load_config(dumped) == cfg


def test_quickstart_yaml_equals_the_built_in_default():
    assert load_config(Path(CONFIGS[0]).parent / "quickstart.yaml") == ExperimentConfig()


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["sample.generation.temperature=0.7", "eval.benchmarks.1.limit=5", "sample.sources=[{dataset: math}]",
                             "paths.data_dir=/tmp/data", "name=exp1"])
    assert cfg.sample.generation.temperature == 0.7
    assert cfg.eval.benchmarks[1].limit == 5 and cfg.eval.benchmarks[1].dataset == "mawps"
    assert [s.dataset for s in cfg.sample.sources] == ["math"]
    assert cfg.paths.data_dir == Path("/tmp/data")
    assert cfg.run_dir == Path("runs/exp1")
    assert cfg.layout.sample == Path("runs/exp1/01_sample")


@pytest.mark.parametrize("runs_dir", ["s3://b/runs", "s3://b"])
def test_a_runs_dir_uri_survives_loading_dumping_and_reloading(runs_dir, tmp_path):
    cfg = load_config(None, [f"paths.runs_dir={runs_dir}", "name=exp1"])
    assert cfg.paths.runs_dir == runs_dir  # not s3:/b, as a Path would make it
    assert cfg.layout.root == f"{runs_dir}/exp1" and cfg.layout.sample == f"{runs_dir}/exp1/01_sample"
    dumped = tmp_path / "exp1.yaml"
    dumped.write_text(dump_config(cfg))
    assert f"runs_dir: {runs_dir}\n" in dumped.read_text()
    again = load_config(dumped)
    assert again == cfg and again.paths.runs_dir == runs_dir
    with pytest.raises(ConfigError, match=f"paths.runs_dir={runs_dir}: runs on object storage are not supported yet"):
        cfg.run_dir  # noqa: B018 - the stages' local folder: a clear error until runs go on object storage


def test_a_local_runs_dir_stays_a_path_and_keeps_its_hash():
    cfg = load_config(None, ["paths.runs_dir=/tmp/runs/"])
    assert cfg.paths.runs_dir == Path("/tmp/runs") and cfg.run_dir == Path("/tmp/runs/quickstart")
    assert section_hash(cfg.paths) == section_hash(load_config(None, ["paths.runs_dir=/tmp/runs"]).paths)


def test_file_name_is_the_default_run_name(tmp_path):
    path = tmp_path / "my_exp.yaml"
    path.write_text("sample:\n  num_samples: 8\n")
    assert load_config(path).name == "my_exp"


def test_typo_in_file_names_file_line_path_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsample:\n  num_samples: 2\n  generation:\n    temprature: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}:5: sample.generation.temprature: unknown key (did you mean 'temperature'?)" in message


@pytest.mark.parametrize("key, where", [("sample.temperature=0.5", "sample.generation.temperature"),
                                        ("serve.max_model_len=512", "serve.engine.max_model_len"),
                                        ("eval.max_rounds=4", "eval.generation.max_rounds")])
def test_a_key_of_a_nested_section_says_where_it_lives(key, where):
    with pytest.raises(ConfigError) as err:
        load_config(None, [key])
    assert f"it lives in {where}" in str(err.value)


def test_the_shared_generation_reaches_every_stage_unless_a_stage_overrides_it():
    cfg = load_config(None, ["generation.observation=compat", "generation.max_rounds=3",
                             "eval.generation.temperature=0", "sample.engine.backend=hf"])
    assert {cfg.sample.generation.observation, cfg.eval.generation.observation,
            cfg.serve.generation.observation} == {"compat"}
    assert cfg.sample.generation.max_rounds == cfg.eval.generation.max_rounds == cfg.serve.generation.max_rounds == 3
    assert cfg.eval.generation.temperature == 0 and cfg.sample.generation.temperature == 0.6
    assert cfg.serve.generation.prompt == "train" and cfg.sample.engine.model == "smollm2"  # section defaults kept


def test_typo_in_override_names_the_override():
    with pytest.raises(ConfigError, match=r"--set minimize.kk=2: minimize.kk: unknown key \(did you mean 'k'\?\)"):
        load_config(None, ["minimize.kk=2"])


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        load_config(None, ["trian.epochs=1"])


@pytest.mark.parametrize("override, fragment", [
    ("sample.generation.temperature=hot", "sample.generation.temperature: Input should be a valid number"),
    ("sample.num_samples=0", "sample.num_samples: Input should be greater than or equal to 1"),
    ("verify.grader=lenient", "verify.grader: Input should be 'compat' or 'strict'"),
    ("sample.sources.0.dataset=gsm8", "unknown dataset 'gsm8' (did you mean 'gsm8k'?)"),
    ("sample.sources.0.split=singelop", "sample.sources.0.split: dataset 'mawps' has no split 'singelop' (did you mean 'singleop'?)"),
    ("name=has space", "name: String should match pattern"),
])
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)


@pytest.mark.parametrize("override", ["sample.temperature", "=3", "eval.benchmarks.9.limit=1", "name.x=1"])
def test_malformed_overrides(override):
    with pytest.raises(ConfigError, match="--set"):
        load_config(None, [override])


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("sample:\n  model: [tiny\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/does_not_exist.yaml")


def test_section_hash_tracks_changes():
    base = ExperimentConfig()
    assert section_hash(base.sample) == section_hash(ExperimentConfig().sample)
    assert section_hash(base.sample) != section_hash(load_config(None, ["sample.generation.seed=1"]).sample)
    assert section_hash(base.sample) != section_hash(base.sample, extra="upstream-changed")
