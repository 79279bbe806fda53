"""Stage 04 as a Ray job: mix the minimal sets, decontaminate, write the SFT file (= `mmos mix`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/04_mix.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.mix)
