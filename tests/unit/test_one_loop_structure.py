"""Structure that keeps sampling, evaluation and serving from drifting apart: one trajectory loop, one place
for generation and engine settings, no private sampler borrowed across modules."""

import ast
import inspect
from pathlib import Path

from pydantic import BaseModel

from mmos_ray import config

PACKAGE = Path(__file__).resolve().parents[2] / "mmos_ray"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


def test_only_the_engines_loop_applies_rounds():
    applying = {name for name, tree in modules()
                for node in ast.walk(tree)
                if isinstance(node, (ast.Name, ast.Attribute, ast.alias))
                and {"apply_observation", "apply_generation"} & {getattr(node, "id", None), getattr(node, "attr", None),
                                                                 getattr(node, "name", None)}}
    assert applying <= {"core/tir.py", "engines/trajectory.py"}, applying


def test_nothing_imports_a_private_name_of_another_module():
    borrowed = [(name, node.module, alias.name) for name, tree in modules() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmos_ray")
                for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not borrowed, borrowed


def sections():
    return [cls for _, cls in inspect.getmembers(config, inspect.isclass)
            if issubclass(cls, BaseModel) and cls.__module__ == config.__name__]


def test_generation_and_engine_fields_are_declared_once():
    # `seed` is also the seed of other work (minimize's random baseline, mix, train): only the sections
    # that generate may not declare it.
    generation, engine = set(config.GenerationConfig.model_fields), set(config.EngineConfig.model_fields)
    for cls in (config.SampleConfig, config.EvalConfig, config.ServeConfig):
        assert "seed" not in cls.model_fields
    generation.discard("seed")
    for cls in sections():
        fields = set(cls.model_fields)
        if cls is not config.GenerationConfig:
            assert not fields & generation, (cls.__name__, fields & generation)
        if cls is not config.EngineConfig:
            assert not fields & (engine - {"model"}), (cls.__name__, fields & engine)
    # `model` is an engine field too; other sections name their models by role (train.base_model).
    assert [cls.__name__ for cls in sections() if "model" in cls.model_fields] == ["EngineConfig"]
