"""Stage 05 as a Ray job: fine-tune with Ray Train + DeepSpeed (= `mmos train`); resumes from checkpoints.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/05_train.py --config configs/paper_7b_gpu.yaml [--set KEY=VALUE ...]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.train)
