"""Stages 02-04 on local Ray: the MMOS bugs we must not repeat, and a 10,000-row chain that gives the
same SFT file twice."""

import logging
import shutil

import pytest

from mmos_ray import storage
from mmos_ray.config import load_config
from mmos_ray.core.records import Problem, Trajectory
from mmos_ray.loaders import load_problems
from mmos_ray.stages import minimize, mix, verify
from mmos_ray.storage import RunLayout
from tests.stages.synthetic import make_run, trajectory_text


def run_chain(run_dir, cfg):
    layout = RunLayout(run_dir)
    for name, module, section in ((layout.VERIFY, verify, cfg.verify), (layout.MINIMIZE, minimize, cfg.minimize),
                                  (layout.MIX, mix, cfg.mix)):
        layout.stage(name).mkdir(parents=True, exist_ok=True)
        manifest = module.run(section, cfg.paths, layout.stage(name))
        storage.write_manifest(layout.stage(name), {"stage": name, **manifest})
    return {r["sample_idx"]: r for r in storage.read_parts(layout.verify)}


def traj(problem_id, idx, code, output, answer, prose="Let's compute it."):
    text = trajectory_text(code, output, answer, prose)
    return Trajectory(problem_id=problem_id, sample_idx=idx, seed=idx, model="m", prompt_version="mmos-train-v1",
                      text=text, rounds=2, finish_reason="boxed", num_tokens=1, num_prompt_tokens=1, executions=1)


@pytest.fixture(scope="module")
def regressions(tmp_path_factory, data_dir, ray_local):
    run_dir = tmp_path_factory.mktemp("run")
    gsm, math = load_problems("gsm8k", "train", data_dir=data_dir, limit=1)[0], \
        Problem("math/train/0", "math", "train", "What is 6 times 12?", "72")
    storage.write_parquet(RunLayout(run_dir).problems, [gsm.to_row(), math.to_row()])
    g = gsm.id  # gold 72
    two_blocks = trajectory_text("print(72)", "72", "72") .replace(
        "The answer is", "Check:\n```python\nprint(undefined_name)\n```\n```output\n72\n```\nThe answer is")
    rows = [
        traj(g, 0, "number = 72\nprint(number)", "72", "72"),  # starts with letters of "python": MMOS mangled it
        traj(g, 1, "total = 72\nprint(total)", "72", "72", prose="First we add. Then we check.\n\nSo:"),
        Trajectory(g, 2, 2, "m", "mmos-train-v1", two_blocks, 3, "boxed", 1, 1, 2),  # its second block fails
        traj(g, 3, "secret = 72\nprint(secret)", "72", "72"),
        traj(g, 4, "print(secret)", "72", "72"),  # passes only if state leaked from sample 3
        traj(g, 5, "x = 72\nprint(x)", "71", "72"),  # recorded output differs from what it prints
        traj(math.id, 0, "print(6 * 12)", "72", "72"),  # same index as gsm8k/train/0's sample 0
    ]
    storage.write_parquet(storage.part_file(RunLayout(run_dir).sample, "00000"), [t.to_row() for t in rows])
    cfg = load_config(None, [f"paths.data_dir={data_dir}", "mix.decontaminate=false"])
    verified = run_chain(run_dir, cfg)
    return run_dir, {(r["problem_id"], r["sample_idx"]): r for r in storage.read_parts(RunLayout(run_dir).verify)}


def test_fence_is_removed_exactly_not_by_character_set(regressions):
    _, rows = regressions
    assert rows[("gsm8k/train/0", 0)]["exec_ok"] and rows[("gsm8k/train/0", 0)]["correct"]


def test_prose_before_code_is_allowed(regressions):
    assert regressions[1][("gsm8k/train/0", 1)]["exec_ok"]


def test_every_block_is_checked_not_only_the_first(regressions):
    row = regressions[1][("gsm8k/train/0", 2)]
    assert row["blocks"] == 2 and not row["exec_ok"] and row["exec_error"].startswith("NameError")


def test_no_state_is_carried_between_programs(regressions):
    assert regressions[1][("gsm8k/train/0", 3)]["exec_ok"]
    assert not regressions[1][("gsm8k/train/0", 4)]["exec_ok"]


def test_recorded_outputs_are_checked(regressions):
    assert not regressions[1][("gsm8k/train/0", 5)]["outputs_match"]
    assert regressions[1][("gsm8k/train/0", 0)]["outputs_match"]


def test_datasets_sharing_an_index_stay_apart(regressions):
    run_dir, _ = regressions
    ranked = storage.read_parquet(RunLayout(run_dir).ranked)
    assert {(r["problem_id"], r["rank"]) for r in ranked if r["rank"] == 0} == {("gsm8k/train/0", 0),
                                                                               ("math/train/0", 0)}
    sft = storage.read_parquet(RunLayout(run_dir).sft)
    assert {r["id"] for r in sft} >= {"gsm8k/train/0#0", "math/train/0#0"}
    assert all(r["prompt"].startswith("<|user|>\n") for r in sft)


def test_the_chain_over_10000_rows_gives_the_same_sft_file_twice(tmp_path, data_dir, ray_local):
    problems = [p for p in load_problems("gsm8k", "train", data_dir=data_dir, limit=600) if p.gold.lstrip("-").isdigit()]
    problems = problems[:500]
    first = tmp_path / "first" / "run"
    make_run(first, problems, samples=20)
    second = tmp_path / "second" / "run"
    shutil.copytree(first, second)
    cfg = load_config(None, [f"paths.data_dir={data_dir}", "minimize.k=2", "mix.rates={gsm8k/train: 0.9}"])
    run_chain(first, cfg)
    run_chain(second, cfg)
    rows = storage.read_parts(RunLayout(first).verify)
    assert len(rows) == 10_000 and 0 < sum(r["correct"] for r in rows) < 10_000
    assert all(r["outputs_match"] and r["exec_ok"] for r in rows)
    for name in ("sft.jsonl", "sft.parquet", "data_card.json"):
        assert (RunLayout(first).mix / name).read_bytes() == (RunLayout(second).mix / name).read_bytes(), name
    card = storage.read_manifest(RunLayout(first).minimize)
    assert card["counts"]["distinct"] < card["counts"]["usable_paths"]  # duplicates and renamings collapsed
    funnel = __import__("json").loads(RunLayout(first).data_card.read_text())["funnel"]["gsm8k/train"]
    assert funnel["samples"] == 10_000 and funnel["selected"] >= funnel["mixed"] >= funnel["after_decontamination"] > 0


def test_a_part_verified_in_several_calls_is_written_whole_and_in_key_order(tmp_path, data_dir, ray_local, caplog):
    problems = [p for p in load_problems("gsm8k", "train", data_dir=data_dir, limit=12) if p.gold.lstrip("-").isdigit()]
    run_dir = tmp_path / "run"
    make_run(run_dir, problems[:8], samples=3)  # one part of 24 rows, shuffled
    parts = {}
    for batch_size in (5, 256):
        stage = run_dir / f"{RunLayout.VERIFY}_{batch_size}"
        section = load_config(None, [f"verify.batch_size={batch_size}"]).verify
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mmos_ray.stages.verify"):
            verify.run(section, load_config(None, [f"paths.data_dir={data_dir}"]).paths, stage)
        calls = [r for r in caplog.records if "trajectories verified" in r.getMessage()]  # one line per call
        assert len(calls) == (5 if batch_size == 5 else 1)
        assert storage.part_files(stage) == [storage.part_file(stage, "00000")]
        parts[batch_size] = storage.read_parquet(storage.part_file(stage, "00000"))
    keys = [(r["problem_id"], r["sample_idx"]) for r in parts[5]]
    assert len(keys) == 24 and keys == sorted(keys)
    assert parts[5] == parts[256]  # five calls give the same part as one
