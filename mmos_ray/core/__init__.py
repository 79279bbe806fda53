"""Pure core: records, answers, grading, prompts and the other logic that needs no Ray, torch or vLLM.

A test (tests/unit/test_import_boundaries.py) fails if anything here imports ray, torch, transformers,
vllm or deepspeed.
"""
