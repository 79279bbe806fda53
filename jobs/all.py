"""The whole pipeline as a Ray job (the same call as `mmos run`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml \
        -- python jobs/all.py --config configs/quickstart.yaml [--set KEY=VALUE ...] [--fresh]
"""

import argparse

from mmos_ray import pipeline
from mmos_ray.config import load_config

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    for manifest in pipeline.run(load_config(args.config, args.overrides), fresh=args.fresh):
        print(manifest["stage"], "skipped" if manifest["skipped"] else "done", manifest.get("counts"))
