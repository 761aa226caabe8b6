"""quantloop: quantize a language model, measure what it costs, record everything.

    python run.py                                   # one job on the embedded default
    python run.py -m quant=int8,int4,int2           # a sweep; summary + selection at the end
    python run.py model=tiny_llama eval=smoke       # the tiny config-built model (CI smoke)

See README.md and docs/ for the config groups and the result schema.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# numba's OpenMP workers spin-wait by default; with several jobs or torch sharing the cores that
# slows the kernels 3-4x (measured in benchmarks/bench_formats.py).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from runner.app import main as _main  # noqa: E402
from runner.config import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    return _main(cfg)


if __name__ == "__main__":
    main()
