"""Stage 03 as a Ray job: rank each problem's distinct correct paths (= `mmos minimize`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/03_minimize.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.minimize)
