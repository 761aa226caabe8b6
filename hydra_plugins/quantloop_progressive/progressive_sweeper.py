"""ProgressiveSweeper: launches one ladder level at a time and stops when the targets are met.

Works with any launcher (basic, joblib, submitit, ...): each level is one
``launcher.launch([overrides], initial_job_idx=i)`` call. The loop logic lives in
``sweeps.progressive`` (Hydra-free); this class adapts it to Hydra's Sweeper interface.
"""

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class ProgressiveSweepError(CompactHydraException):
    """Bad sweep arguments or settings; Hydra prints only this message."""


class ProgressiveSweeper(Sweeper):
    def __init__(
        self,
        ladder_key: str = "quant",
        ladder: list[str] | None = None,
        max_iterations: int | None = None,
        stop_when: str = "targets_met",
        selection_key: str = "selection",
        run_selection: bool = True,
    ) -> None:
        super().__init__()
        from sweeps.progressive import DEFAULT_LADDER

        self.ladder_key = ladder_key
        self.ladder = list(ladder) if ladder is not None else list(DEFAULT_LADDER)
        self.max_iterations = max_iterations
        self.stop_when = stop_when
        self.selection_key = selection_key
        self.run_selection = run_selection
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.summary_path: Path | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ overrides

    def _split_arguments(self, arguments: list[str]) -> tuple[list[str], list[str]]:
        """(fixed overrides, ladder levels); a sweep over ladder_key replaces the ladder."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed: list[str] = []
        ladder = list(self.ladder)
        for override in parser.parse_overrides(arguments):
            if override.key_or_group == self.ladder_key:
                if override.is_sweep_override():
                    ladder = [str(v) for v in override.sweep_string_iterator()]
                else:
                    ladder = [override.get_value_element_as_str()]
            elif override.is_sweep_override():
                raise ProgressiveSweepError(
                    f"progressive sweeper walks one ladder over '{self.ladder_key}'; it cannot "
                    f"also sweep '{override.get_key_element()}' "
                    f"({override.input_line}). Fix that value or use the basic sweeper."
                )
            else:
                fixed.append(str(override.input_line))
        return fixed, ladder

    def _selection_config(self, first_job_overrides: list[str]) -> Any:
        """The job config's selection node (with every override applied) as SelectionConfig."""
        from sweeps.selection_config import SelectionConfig

        assert self.hydra_context is not None and self.config is not None
        job_cfg = self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=first_job_overrides
        )
        node = OmegaConf.select(job_cfg, self.selection_key)
        if node is None:
            log.warning(
                "no '%s' node in the job config; using default selection settings",
                self.selection_key,
            )
            return SelectionConfig().validate()
        data = OmegaConf.to_container(node, resolve=True)
        return SelectionConfig.from_mapping(data).validate()

    # ------------------------------------------------------------------ launching

    def _launch_one(self, overrides: list[str], index: int) -> Any:
        from sweeps.progressive import JobOutcome, read_job_result

        assert self.launcher is not None
        self.validate_batch_is_legal([overrides])
        tic = time.perf_counter()
        returns = self.launcher.launch([overrides], initial_job_idx=index)
        seconds = time.perf_counter() - tic
        ret: JobReturn = returns[0]
        self._returns.append(returns)
        job_dir = _job_dir(ret)
        error = None
        if ret.status != JobStatus.COMPLETED:
            error = f"{type(ret._return_value).__name__}: {ret._return_value}"
        result = read_job_result(job_dir)
        if result is None and ret.status == JobStatus.COMPLETED:
            value = ret.return_value
            if isinstance(value, dict) and value.get("id"):
                result = dict(value)
        return JobOutcome(job_dir=job_dir, result=result, error=error, seconds=seconds)

    def sweep(self, arguments: list[str]) -> Any:
        from sweeps.progressive import LadderPlan, run_ladder, write_summary
        from sweeps.selection import run_selection

        assert self.config is not None
        from sweeps.selection_config import SelectionConfigError

        fixed, ladder = self._split_arguments(arguments)
        try:
            plan = LadderPlan(
                key=self.ladder_key,
                levels=ladder,
                fixed_overrides=fixed,
                max_iterations=self.max_iterations,
                stop_when=self.stop_when,
            ).validate()
            cfg = self._selection_config([*fixed, f"{self.ladder_key}={plan.planned()[0]}"])
        except SelectionConfigError as exc:
            raise ProgressiveSweepError(str(exc)) from exc
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        self._returns: list[Any] = []
        summary = run_ladder(plan, cfg, self._launch_one)
        if self.run_selection:
            decision = run_selection(sweep_dir, cfg)
            summary["selection_file"] = decision["files"]["json"]
            summary["selection_chosen_id"] = (decision.get("chosen") or {}).get("id")
        self.summary_path = write_summary(sweep_dir, summary)
        log.info(
            "Pass-1: %s (%s); summary %s",
            summary["message"],
            summary["stopped_because"],
            self.summary_path,
        )
        return self._returns


def _job_dir(ret: JobReturn) -> str | None:
    hydra_cfg = ret.hydra_cfg
    if hydra_cfg is not None:
        out = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir")
        if out:
            return str(out)
    return ret.working_dir
