"""Stage 02 as a Ray job: re-run every code block in the sandbox, grade and fingerprint (= `mmos verify`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/02_verify.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.verify)
