"""The whole pipeline as a Ray job (the same call as `mmos run`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/all.py --config configs/quickstart.yaml [--set KEY=VALUE ...] [--fresh]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.run)
