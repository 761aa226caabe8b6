"""Structured config of the progressive sweeper, registered as ``hydra/sweeper: progressive``.

No ``from __future__ import annotations`` here: Hydra's plugin scanner executes this module before
it is in ``sys.modules``, and dataclasses cannot resolve string annotations then.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

DEFAULT_LADDER = ["q8_0", "q6_K", "q5_K_M", "q4_K_M", "q3_K_L", "q2_K"]


@dataclass
class ProgressiveSweeperConf:
    _target_: str = "hydra_plugins.quantloop_progressive.progressive_sweeper.ProgressiveSweeper"
    # Config group (or key) the ladder overrides: each level runs as `<ladder_key>=<level>`.
    ladder_key: str = "quant"
    # Levels in the order they are tried (least compressed first). A command-line sweep over
    # ladder_key (e.g. quant=int8,int4,int2) replaces this list.
    ladder: list[str] = field(default_factory=lambda: list(DEFAULT_LADDER))
    # At most this many levels are launched (null = the whole ladder).
    max_iterations: int | None = None
    # targets_met: stop at the first level meeting every target;
    # quality_fails: continue while levels pass, stop at the first failure after a pass.
    stop_when: str = "targets_met"
    # Where the job config keeps the selection settings (SelectionConfig fields).
    selection_key: str = "selection"
    # Run the normal selection over the sweep dir at the end (selection.json/md, pareto.png).
    run_selection: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="progressive",
    node=ProgressiveSweeperConf,
    provider="quantloop",
)
