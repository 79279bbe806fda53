"""Stage 01 as a Ray job: sample tool-integrated paths (= `mmos sample`); resumes an interrupted run.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/01_sample.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.sample)
