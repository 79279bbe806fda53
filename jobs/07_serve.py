"""Stage 07 as a Ray job: deploy the trained model with Ray Serve (= `mmos serve`). The job ends once the
app is up; the app stays in the cluster (`serve status`, `serve shutdown`). On a cluster, bind all
interfaces and require a key (put MMOS_SERVE_API_KEY in the env_vars of cluster/runtime_env.yaml):

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/07_serve.py --config configs/paper_7b_gpu.yaml --set serve.host=0.0.0.0 [--set serve.engine.model=DIR]
"""

from mmos_ray import pipeline
from mmos_ray.cli import job

if __name__ == "__main__":
    job(pipeline.serve)
