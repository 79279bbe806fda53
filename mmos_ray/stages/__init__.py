"""Stages: one module (or package, for serve and train) per pipeline stage, each with one public
`run(section, paths, stage_dir) -> manifest` (the counts and facts of the stage; `mmos_ray.pipeline`
adds hashes and versions and writes it last).

Ray plumbing lives here (and nowhere else sets resources). Modules are imported by `mmos_ray.pipeline`
inside its functions, so that importing the CLI stays light. Tools that are not stages (the problem
generator, the GSM-HARD audit) are in `mmos_ray.tools`; the Ray-side helpers the stages share (connecting
to Ray, custom resources, the sandbox actor pool) in `mmos_ray.cluster`.
"""
