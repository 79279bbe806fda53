"""`python -m mmos_ray` = `mmos`."""

from mmos_ray.cli import main

main()
