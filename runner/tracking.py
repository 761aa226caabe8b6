"""The W&B sink: the only module of quantloop that imports ``wandb``.

It receives finished results (a job's result dict and tables, a sweep's decision) and records
them: one W&B run per job, grouped by sweep, plus one decision run per sweep. In offline mode
everything (runs, W&B's own cache and config) lives under the given directory, never under the
home directory; ``wandb sync <dir>/wandb/offline-run-*`` uploads it later.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WandbSink:
    def __init__(self, mode: str, project: str, entity: str | None, root: Path):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.root = Path(root)

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def _init(self, name: str, group: str | None, job_type: str, config: dict[str, Any]):
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)
        if self.mode == "offline":
            for var, sub in (
                ("WANDB_CACHE_DIR", "cache"),
                ("WANDB_CONFIG_DIR", "config"),
                ("WANDB_DATA_DIR", "data"),
                ("WANDB_ARTIFACT_DIR", "artifacts"),
            ):
                os.environ[var] = str(self.root / "wandb" / sub)
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(
            mode=self.mode,
            dir=str(self.root),
            project=self.project,
            entity=self.entity,
            group=group,
            name=name,
            job_type=job_type,
            config=config,
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log_job(
        self,
        result: dict[str, Any],
        config: dict[str, Any],
        layer_rows: Sequence[dict[str, Any]],
        plan_rows: Sequence[dict[str, Any]] = (),
        html_reports: Sequence[Path] = (),
    ) -> None:
        """One run for one job: config, metrics as summary, per-layer error and plan tables, and
        the job's HTML reports (e.g. smoothness)."""
        if not self.enabled:
            return
        import wandb

        name = f"{result['model_name']}-{result['quant_format']}-{result['method']}"
        run = self._init(name, result.get("sweep_id"), "quantize", config)
        try:
            flat = {f"metrics/{k}": v for k, v in result.get("metrics", {}).items()}
            flat.update({f"degradation/{k}": v for k, v in result.get("degradation", {}).items()})
            for key in ("size_mb", "bits_per_weight", "compression_ratio", "score"):
                flat[key] = result.get(key)
            flat["passed_threshold"] = result.get("passed_threshold")
            flat["status"] = result.get("status")
            run.summary.update(flat)
            tables = {"per_layer_error": layer_rows, "quant_plan": plan_rows}
            payload = {k: _table(wandb, rows) for k, rows in tables.items() if rows}
            for path in html_reports:
                payload[Path(path).stem] = wandb.Html(Path(path).read_text(encoding="utf-8"))
            run.log(payload)
        finally:
            run.finish()

    def log_decision(self, sweep_dir: str | Path, decision: dict[str, Any], plot_path=None) -> None:
        """The sweep's selection decision as its own run in the sweep's group."""
        if not self.enabled:
            return
        import wandb

        sweep_id = Path(sweep_dir).name
        run = self._init(f"selection-{sweep_id}", sweep_id, "selection", {"sweep_dir": sweep_id})
        try:
            rows = [
                {k: v for k, v in c.items() if not isinstance(v, dict | list)}
                for c in decision.get("candidates", [])
            ]
            payload: dict[str, Any] = {}
            if rows:
                payload["candidates"] = _table(wandb, rows)
            if plot_path and Path(plot_path).exists():
                payload["pareto_front"] = wandb.Image(str(plot_path))
            run.log(payload)
            chosen = decision.get("chosen") or {}
            run.summary.update(
                {
                    "chosen_id": chosen.get("id"),
                    "chosen_quant_format": chosen.get("quant_format"),
                    "rule": decision.get("rule"),
                    "decision_json": json.dumps(decision, default=str)[:100_000],
                }
            )
        finally:
            run.finish()

    def log_pass2(self, sweep_dir: str | Path, payload: dict[str, Any]) -> None:
        """Pass 2's final ranking (``sweeps.pass2.wandb_payload``) as a run in the sweep's group."""
        if not self.enabled:
            return
        import wandb

        sweep_id = Path(sweep_dir).name
        run = self._init(f"pass2-{sweep_id}", sweep_id, "pass2", {"sweep_dir": sweep_id})
        try:
            run.log(
                {
                    name: wandb.Table(columns=t["columns"], data=t["rows"])
                    for name, t in payload.get("tables", {}).items()
                }
            )
            run.summary.update(payload.get("summary", {}))
        finally:
            run.finish()


def _table(wandb, rows: Sequence[dict[str, Any]]):
    columns = list(rows[0])
    data = [[_cell(r.get(c)) for c in columns] for r in rows]
    return wandb.Table(columns=columns, data=data)


def _cell(v: Any) -> Any:
    return str(v) if isinstance(v, tuple | list | dict) else v


# ------------------------------------------------------------------ reading offline runs back

_BLOCK = 32768
_HEADER = 7  # ':W&B' + magic (2 bytes) + version (1 byte); each chunk header is also 7 bytes


def _records(path: Path) -> Iterator[bytes]:
    """Records of a ``run-*.wandb`` file (a leveldb-style log of protobuf records)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, buf = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        if length == 0 and kind == 0:
            break
        buf += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST chunk
            yield buf
            buf = b""


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Group, name, job type, config, final summary and logged (top-level) keys of an offline
    run directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    (path,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history_keys": set()}
    for raw in _records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(
                group=rec.run.run_group, name=rec.run.display_name, job_type=rec.run.job_type
            )
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or ".".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            out["history_keys"].update(i.key or i.nested_key[0] for i in rec.history.item)
    return out
