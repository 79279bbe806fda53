"""Stage 06 as a Ray job: evaluate the base and the trained model on the benchmarks (= `mmos eval`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/06_eval.py --config configs/paper_7b_gpu.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.evaluate)
