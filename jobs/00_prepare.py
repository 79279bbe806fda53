"""Stage 00 as a Ray job: fix the run's problems and build or find its model (= `mmos prepare`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/00_prepare.py --config configs/quickstart.yaml [--set KEY=VALUE ...]
"""

import argparse

from mmos_ray import pipeline
from mmos_ray.config import load_config

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    manifest = pipeline.prepare(load_config(args.config, args.overrides))
    print(manifest["stage"], "skipped" if manifest["skipped"] else "done", manifest.get("counts"))
