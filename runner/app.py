"""The Hydra task: validate the composed config once, then run the job."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.config import ConfigError, to_config
from runner.job import run_job
from sweeps.selection_config import SelectionConfigError

log = logging.getLogger("quantloop")


def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    try:
        config = to_config(cfg)  # every value checked before any work starts
    except (ConfigError, SelectionConfigError) as exc:
        raise SystemExit(f"config error: {exc}") from None
    logging.getLogger().setLevel(config.runner.log_level)
    multirun = hc.mode == RunMode.MULTIRUN
    job_dir = Path(hc.runtime.output_dir)
    sweep_id = Path(hc.sweep.dir).name if multirun else None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    result = run_job(config, resolved, job_dir, sweep_id)
    _print_result(result)
    if result["status"] != "ok" and not multirun:
        raise SystemExit(f"job failed: {'; '.join(result['errors'])}")
    return result


def _print_result(r: dict) -> None:
    if r["status"] != "ok":
        log.error("%s %s: FAILED (%s)", r["model_name"], r["quant_format"], "; ".join(r["errors"]))
        return
    base = ", ".join(f"{k} {v:.5g}" for k, v in r["baseline"].items())
    log.info(
        "%s %s/%s: size %.2f MB (%.3f bpw, %.2fx vs fp16) | %s | baseline: %s | %s",
        r["model_name"],
        r["quant_format"],
        r["method"],
        r["size_mb"],
        r["bits_per_weight"],
        r["compression_ratio"],
        " | ".join(f"{k} {v:.5g}" for k, v in r["metrics"].items()),
        base,
        "PASS" if r["passed_threshold"] else "FAIL: " + "; ".join(r["thresholds"]["reasons"]),
    )
