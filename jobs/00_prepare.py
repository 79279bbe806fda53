"""Stage 00 as a Ray job: fix the run's problems and build or find its model (= `mmos prepare`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/00_prepare.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.prepare)
