"""Safe deployment of a Pass-2 winner into a "core" model directory, with backups and rollback.

Commands (``quantloop-deploy``): ``validate <candidate>``, ``deploy <candidate>``, ``backup``,
``restore <backup>``, ``list-backups``, ``seal <candidate>``, ``status``, ``recover``.

A candidate is a Pass-1 job directory: ``result.json`` plus its model (``model.gguf`` or a
Hugging Face checkpoint) and a ``SHA256SUMS`` file (``sha256sum`` format) naming exactly the files
that make up the artifact. ``seal`` writes that file; Pass 2 seals every candidate it judges, so
what is deployed is byte-for-byte what was judged.

Deploy = validate (paths inside the configured roots, checksums, status/threshold, metric limits,
the model loads) -> back up the current core -> copy into a staging directory next to the core
(same filesystem) and verify it -> rename the core aside, rename staging into place -> verify the
core -> delete the old copy. Every step is recorded first in a journal file; if anything fails
the deploy is rolled back, and if the process dies the next command finds the journal and
restores the previous core (or completes a deploy that was already verified). The core path is
never a half-copied directory. ``QUANTLOOP_DEPLOY_FAULT=<step>`` kills the process at a step
(``kill:<step>``, default) or raises (``raise:<step>``), for testing recovery.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from metrics.judges.responses import sha256_file

FAULT_ENV = "QUANTLOOP_DEPLOY_FAULT"
STEPS = ("begin", "backed_up", "staged", "moved_old", "swapped", "verified")
SUMS_FILE = "SHA256SUMS"
MANIFEST = "manifest.json"
BACKUP_INFO = "BACKUP.json"
LOAD_CHECKS = ("none", "header", "full")
HF_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


class DeployError(RuntimeError):
    """Deployment refused or failed (the message says which check or step)."""


# -- configuration -----------------------------------------------------------------------------
@dataclass
class DeployConfig:
    core_dir: Path
    backups_dir: Path
    candidate_roots: list[Path] = field(default_factory=list)
    require_passed_threshold: bool = True
    require_checksums: bool = True
    load_check: str = "full"
    limits: dict[str, dict[str, float]] = field(default_factory=dict)
    keep_backups: int | None = None

    def __post_init__(self) -> None:
        self.core_dir = Path(self.core_dir).expanduser().resolve()
        self.backups_dir = Path(self.backups_dir).expanduser().resolve()
        self.candidate_roots = [Path(r).expanduser().resolve() for r in self.candidate_roots]
        if self.load_check not in LOAD_CHECKS:
            raise DeployError(
                f"deploy.load_check={self.load_check!r}; valid choices: {', '.join(LOAD_CHECKS)}"
            )
        if self.core_dir == self.backups_dir or self.backups_dir.is_relative_to(self.core_dir):
            raise DeployError("deploy.backups_dir must not be the core dir or inside it")
        if self.core_dir.is_relative_to(self.backups_dir):
            raise DeployError("deploy.core_dir must not be inside backups_dir")
        for metric, lim in self.limits.items():
            bad = set(lim) - {"min", "max"}
            if bad:
                raise DeployError(
                    f"deploy.limits.{metric}: unknown keys {sorted(bad)}; valid: min, max"
                )
        if self.keep_backups is not None and self.keep_backups < 1:
            raise DeployError("deploy.keep_backups must be >= 1 (or null to keep all)")

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> DeployConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise DeployError(
                f"deploy: unknown keys {sorted(unknown)}; valid keys: {sorted(known)}"
            )
        base = base or Path.cwd()
        d = dict(d)
        for key in ("core_dir", "backups_dir"):
            if key not in d:
                raise DeployError(f"deploy.{key} is required")
            d[key] = base / Path(d[key]).expanduser()
        d["candidate_roots"] = [base / Path(r).expanduser() for r in d.get("candidate_roots", [])]
        return cls(**d)

    # state files live next to the core (same filesystem, survive the core's replacement)
    @property
    def journal_path(self) -> Path:
        return self.core_dir.parent / f".{self.core_dir.name}.deploy-journal.json"

    @property
    def lock_path(self) -> Path:
        return self.core_dir.parent / f".{self.core_dir.name}.deploy.lock"

    @property
    def history_path(self) -> Path:
        return self.backups_dir / "history.jsonl"


# -- small filesystem helpers ----------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _now_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S_%f")


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fault(step: str) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    action, _, where = spec.rpartition(":")
    if where != step:
        return
    if action == "raise":
        raise DeployError(f"injected fault at step '{step}'")
    os.kill(os.getpid(), signal.SIGKILL)


def _remove_tree(path: Path) -> None:
    """Remove a directory without ever leaving a half-deleted tree at ``path``."""
    if not path.exists():
        return
    trash = path.with_name(f".{path.name}.trash-{_now_id()}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def _safe_rel(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel not in ("", ".")


def read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DeployError(f"{path}: line {n} is not '<sha256>  <file>'")
        sums[rel.strip()] = digest.lower()
    return sums


def artifact_files(candidate: Path) -> list[str]:
    """The files that make up a candidate artifact (relative paths), result.json included."""
    files = []
    if (candidate / "model.gguf").is_file():
        files.append("model.gguf")
    elif (candidate / "config.json").is_file():
        files += [f for f in HF_MODEL_FILES if (candidate / f).is_file()]
        files += sorted(p.name for p in candidate.glob("*.safetensors"))
        files += sorted(p.name for p in candidate.glob("*.safetensors.index.json"))
    else:
        raise DeployError(f"{candidate}: no model.gguf and no HF checkpoint (config.json)")
    if (candidate / "result.json").is_file():
        files.append("result.json")
    return files


def seal(candidate: Path) -> dict[str, str]:
    """Write ``SHA256SUMS`` for a candidate's artifact files; returns {file: sha256}."""
    candidate = Path(candidate).resolve()
    sums = {f: sha256_file(candidate / f) for f in artifact_files(candidate)}
    tmp = candidate / f".{SUMS_FILE}.tmp"
    tmp.write_text("".join(f"{h}  {f}\n" for f, h in sums.items()))
    os.replace(tmp, candidate / SUMS_FILE)
    return sums


# -- validation --------------------------------------------------------------------------------
@dataclass
class Validation:
    candidate: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        return ok

    def failures(self) -> str:
        return "; ".join(f"{c['check']}: {c['detail']}" for c in self.checks if not c["ok"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "ok": self.ok,
            "checks": self.checks,
            "files": self.files,
        }


def check_model_loads(model_path: Path, mode: str) -> str:
    """Raise if the model does not load; returns a short description."""
    if mode == "none":
        return "skipped"
    if model_path.suffix == ".gguf":
        from gguf import GGUFReader

        reader = GGUFReader(str(model_path))
        desc = f"gguf with {len(reader.tensors)} tensors"
        if mode == "full":
            import torch
            from transformers import AutoModelForCausalLM

            AutoModelForCausalLM.from_pretrained(
                model_path.parent, gguf_file=model_path.name, dtype=torch.float32
            )
            desc += ", loads in transformers"
        return desc
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    desc = f"{config.model_type} config"
    if mode == "full":
        import torch
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        desc += ", loads in transformers"
    return desc


def _model_entry(root: Path, files: list[str] | dict[str, str]) -> Path:
    return root / "model.gguf" if "model.gguf" in files else root


def validate(candidate: str | Path, cfg: DeployConfig) -> Validation:
    """Run every pre-deployment check; never raises for a bad candidate (see ``.ok``)."""
    v = Validation(str(candidate))
    path = Path(candidate).expanduser()
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        v.add("path", False, f"does not exist ({e})")
        return v
    if not real.is_dir():
        v.add("path", False, "a candidate is a job directory (result.json + model)")
        return v
    if not cfg.candidate_roots:
        v.add("path", False, "no candidate_roots configured; refusing to deploy from anywhere")
        return v
    if not v.add(
        "path",
        _inside(real, cfg.candidate_roots),
        f"{real} must be inside one of {[str(r) for r in cfg.candidate_roots]}",
    ):
        return v
    if _inside(real, [cfg.core_dir, cfg.backups_dir]):
        v.add("path", False, "candidate must not be inside the core or backups directory")
        return v
    # result.json: status, threshold, limits
    try:
        result = json.loads((real / "result.json").read_text())
        v.result = result
        v.add("result_json", True, f"id={result.get('id')}")
    except (OSError, json.JSONDecodeError) as e:
        v.add("result_json", False, f"cannot read result.json ({e})")
        return v
    v.add("status", result.get("status") == "ok", f"status={result.get('status')!r}")
    if cfg.require_passed_threshold:
        v.add(
            "passed_threshold",
            result.get("passed_threshold") is True,
            f"passed_threshold={result.get('passed_threshold')!r}",
        )
    metrics = result.get("metrics") or {}
    for metric, lim in cfg.limits.items():
        value = metrics.get(metric)
        ok = value is not None and lim.get("min", -float("inf")) <= value <= lim.get(
            "max", float("inf")
        )
        v.add(f"limit:{metric}", ok, f"{metric}={value} limits={lim}")
    # checksums
    sums_path = real / SUMS_FILE
    if sums_path.is_file():
        try:
            sums = read_sums(sums_path)
        except DeployError as e:
            v.add("checksums", False, str(e))
            return v
        bad_paths = [f for f in sums if not _safe_rel(f)]
        if bad_paths:
            v.add("checksums", False, f"paths escape the candidate dir: {bad_paths}")
            return v
        mismatched, missing = [], []
        for rel, digest in sums.items():
            f = (real / rel).resolve()
            if not f.is_file() or not f.is_relative_to(real):
                missing.append(rel)
            elif sha256_file(f) != digest:
                mismatched.append(rel)
        ok = not mismatched and not missing and "result.json" in sums
        v.add(
            "checksums",
            ok,
            f"mismatch={mismatched} missing={missing}" if not ok else f"{len(sums)} files match",
        )
        v.files = sums
    elif cfg.require_checksums:
        v.add(
            "checksums",
            False,
            f"no {SUMS_FILE}; run `quantloop-deploy seal` when the artifact is judged",
        )
        return v
    else:
        v.files = {f: sha256_file(real / f) for f in artifact_files(real)}
        v.add("checksums", True, "no SHA256SUMS (require_checksums=false); computed now")
    if not v.ok:
        return v
    try:
        v.add("model_loads", True, check_model_loads(_model_entry(real, v.files), cfg.load_check))
    except Exception as e:  # noqa: BLE001 (any loader failure refuses the candidate)
        v.add("model_loads", False, f"{type(e).__name__}: {e}")
    return v


# -- the journaled swap ------------------------------------------------------------------------
class Deployer:
    def __init__(self, cfg: DeployConfig) -> None:
        self.cfg = cfg
        cfg.core_dir.parent.mkdir(parents=True, exist_ok=True)
        cfg.backups_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(cfg.lock_path))

    # public commands (each takes the lock and recovers first)
    def run(self, fn, *args):
        with self._lock:
            recovered = self._recover()
            self._clean_partial_backups()
            out = fn(*args)
            if recovered and isinstance(out, dict):
                out["recovered"] = recovered
            return out

    def validate(self, candidate) -> dict[str, Any]:
        return self.run(lambda: validate(candidate, self.cfg).to_dict())

    def deploy(self, candidate, source_sweep: str | None = None) -> dict[str, Any]:
        return self.run(self._deploy, candidate, source_sweep)

    def backup(self, reason: str = "manual") -> dict[str, Any]:
        return self.run(self._backup, reason)

    def restore(self, name: str) -> dict[str, Any]:
        return self.run(self._restore, name)

    def list_backups(self) -> list[dict[str, Any]]:
        with self._lock:
            self._recover()
            return self._list_backups()

    def status(self) -> dict[str, Any]:
        return self.run(self._status)

    def recover(self) -> dict[str, Any]:
        with self._lock:
            return {"recovered": self._recover()}

    # -- implementation ----------------------------------------------------------------------
    def _journal(self, **update) -> dict[str, Any]:
        path = self.cfg.journal_path
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(update, updated=_now_iso())
        atomic_write_json(path, data)
        return data

    def _paths(self, op_id: str) -> tuple[Path, Path]:
        core = self.cfg.core_dir
        return (
            core.with_name(f".{core.name}.staging-{op_id}"),
            core.with_name(f".{core.name}.old-{op_id}"),
        )

    def _clean_partial_backups(self) -> None:
        """Backups are copied to a hidden temp dir then renamed; drop copies a crash left."""
        for d in self.cfg.backups_dir.glob(".backup_*.tmp"):
            shutil.rmtree(d, ignore_errors=True)

    def _recover(self) -> dict[str, Any] | None:
        """Finish or undo an operation a killed process left behind (journal present)."""
        path = self.cfg.journal_path
        if not path.exists():
            return None
        j = json.loads(path.read_text())
        staging, old = Path(j["staging"]), Path(j["old"])
        core = self.cfg.core_dir
        if j.get("step") == "verified":
            _remove_tree(old)
            action = "completed"
        else:
            if old.exists():  # the core was moved aside: whatever sits at core is the new one
                _remove_tree(core)
                os.rename(old, core)
            elif not j.get("had_core") and core.exists() and not staging.exists():
                _remove_tree(core)  # first deploy that reached the swap but was never verified
            action = "rolled_back"
        _remove_tree(staging)
        path.unlink()
        _fsync_dir(path.parent)
        info = {"op": j.get("op"), "id": j.get("id"), "step": j.get("step"), "action": action}
        self._history({"event": "recovered", **info})
        return info

    def _swap_in(
        self,
        op: str,
        files: dict[str, Path],
        expected: dict[str, str],
        manifest: dict[str, Any] | None,
        backup_reason: str,
    ) -> dict[str, Any]:
        cfg, core = self.cfg, self.cfg.core_dir
        op_id = _now_id()
        staging, old = self._paths(op_id)
        had_core = core.exists()
        self._journal(
            op=op,
            id=op_id,
            step="begin",
            staging=str(staging),
            old=str(old),
            had_core=had_core,
            started=_now_iso(),
        )
        try:
            _fault("begin")
            backup = self._backup(backup_reason)["backup"] if had_core else None
            self._journal(step="backed_up", backup=backup)
            _fault("backed_up")
            staging.mkdir(parents=True)
            for rel, src in files.items():
                dst = staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            self._verify_dir(staging, expected)
            if manifest is not None:
                manifest = {**manifest, "previous_backup": backup, "deploy_id": op_id}
                atomic_write_json(staging / MANIFEST, manifest)
            _fsync_dir(staging)
            self._journal(step="staged")
            _fault("staged")
            if had_core:
                os.rename(core, old)
                self._journal(step="moved_old")
                _fault("moved_old")
            os.rename(staging, core)
            _fsync_dir(core.parent)
            self._journal(step="swapped")
            _fault("swapped")
            self._verify_dir(core, expected)
            model = _model_entry(core, expected)
            if cfg.load_check != "none" and (
                model.suffix == ".gguf" or (core / "config.json").exists()
            ):
                check_model_loads(model, cfg.load_check)
            self._journal(step="verified")
            _fault("verified")
        except BaseException as e:
            self._recover()
            if not isinstance(e, Exception):
                raise
            if isinstance(e, DeployError):
                raise DeployError(f"{op} failed and was rolled back: {e}") from e
            raise DeployError(f"{op} failed and was rolled back: {type(e).__name__}: {e}") from e
        _remove_tree(old)
        cfg.journal_path.unlink()
        _fsync_dir(cfg.journal_path.parent)
        return {"op": op, "id": op_id, "core": str(core), "backup": backup}

    @staticmethod
    def _verify_dir(root: Path, expected: dict[str, str]) -> None:
        for rel, digest in expected.items():
            f = root / rel
            if not f.is_file():
                raise DeployError(f"verify: {rel} missing in {root.name}")
            if sha256_file(f) != digest:
                raise DeployError(f"verify: checksum mismatch for {rel} in {root.name}")

    def _deploy(self, candidate, source_sweep: str | None) -> dict[str, Any]:
        v = validate(candidate, self.cfg)
        if not v.ok:
            raise DeployError(f"candidate refused: {v.failures()}")
        real = Path(candidate).resolve()
        r = v.result or {}
        manifest = {
            "schema": "quantloop.core/1",
            "op": "deploy",
            "deployed_at": _now_iso(),
            "candidate": {
                k: r.get(k)
                for k in (
                    "id",
                    "model_name",
                    "quant_format",
                    "method",
                    "size_mb",
                    "bits_per_weight",
                    "score",
                    "passed_threshold",
                    "sweep_id",
                )
            },
            "metrics": r.get("metrics"),
            "source": str(real),
            "source_sweep": source_sweep or r.get("sweep_id"),
            "checksums": v.files,
        }
        out = self._swap_in(
            "deploy", {f: real / f for f in v.files}, v.files, manifest, "pre-deploy"
        )
        out.update(
            candidate=str(real),
            validation=v.to_dict(),
            manifest=manifest | {"deploy_id": out["id"]},
        )
        self._history(
            {
                "event": "deployed",
                "id": out["id"],
                "candidate": str(real),
                "backup": out["backup"],
                "model": r.get("model_name"),
                "quant": r.get("quant_format"),
            }
        )
        return out

    def _backup(self, reason: str) -> dict[str, Any]:
        core = self.cfg.core_dir
        if not core.is_dir():
            raise DeployError(f"nothing to back up: {core} does not exist")
        name = f"backup_{_now_id()}"
        final = self.cfg.backups_dir / name
        tmp = self.cfg.backups_dir / f".{name}.tmp"
        shutil.copytree(core, tmp, symlinks=False)
        files = {
            str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {}
        if (tmp / MANIFEST).is_file():
            manifest = json.loads((tmp / MANIFEST).read_text())
        atomic_write_json(
            tmp / BACKUP_INFO,
            {
                "created": _now_iso(),
                "reason": reason,
                "core": str(core),
                "checksums": files,
                "model": (manifest.get("candidate") or {}).get("model_name"),
                "quant": (manifest.get("candidate") or {}).get("quant_format"),
                "deploy_id": manifest.get("deploy_id"),
            },
        )
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        self._prune()
        return {"backup": name, "path": str(final), "files": len(files)}

    def _prune(self) -> None:
        keep = self.cfg.keep_backups
        if keep is None:
            return
        for b in self._list_backups()[keep:]:
            _remove_tree(self.cfg.backups_dir / b["name"])

    def _backup_dir(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise DeployError(f"backup name {name!r} is not a plain backup name (see list-backups)")
        path = (self.cfg.backups_dir / name).resolve()
        if path.parent != self.cfg.backups_dir or not (path / BACKUP_INFO).is_file():
            names = [b["name"] for b in self._list_backups()]
            raise DeployError(f"no backup {name!r}; available: {', '.join(names) or '(none)'}")
        return path

    def _restore(self, name: str) -> dict[str, Any]:
        src = self._backup_dir(name)
        info = json.loads((src / BACKUP_INFO).read_text())
        expected = info["checksums"]
        bad = [f for f in expected if not _safe_rel(f)]
        if bad:
            raise DeployError(f"backup {name} lists paths outside itself: {bad}")
        try:
            self._verify_dir(src, expected)
        except DeployError as e:
            raise DeployError(f"backup {name} is corrupt: {e}") from e
        out = self._swap_in(
            "restore", {f: src / f for f in expected}, expected, None, f"pre-restore of {name}"
        )
        out["restored"] = name
        self._history(
            {
                "event": "restored",
                "id": out["id"],
                "backup": name,
                "pre_restore_backup": out["backup"],
            }
        )
        return out

    def _list_backups(self) -> list[dict[str, Any]]:
        out = []
        for d in self.cfg.backups_dir.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / BACKUP_INFO).is_file():
                info = json.loads((d / BACKUP_INFO).read_text())
                out.append(
                    {
                        "name": d.name,
                        "created": info.get("created"),
                        "reason": info.get("reason"),
                        "model": info.get("model"),
                        "quant": info.get("quant"),
                        "files": len(info.get("checksums", {})),
                    }
                )
        return sorted(out, key=lambda b: b["name"], reverse=True)

    def _status(self) -> dict[str, Any]:
        m = self.cfg.core_dir / MANIFEST
        return {
            "core": str(self.cfg.core_dir),
            "exists": self.cfg.core_dir.is_dir(),
            "manifest": json.loads(m.read_text()) if m.is_file() else None,
            "backups": len(self._list_backups()),
        }

    def _history(self, event: dict[str, Any]) -> None:
        with open(self.cfg.history_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"at": _now_iso(), **event}) + "\n")


# -- CLI ---------------------------------------------------------------------------------------
def load_config(args: argparse.Namespace) -> DeployConfig:
    d: dict[str, Any] = {}
    base = Path.cwd()
    if args.config:
        import yaml

        cfg_path = Path(args.config)
        raw = yaml.safe_load(cfg_path.read_text()) or {}
        d = dict(raw.get("deploy", raw))
    for key, val in (("core_dir", args.core), ("backups_dir", args.backups)):
        if val:
            d[key] = val
    if args.roots:
        d["candidate_roots"] = args.roots
    if args.load_check:
        d["load_check"] = args.load_check
    d.setdefault("core_dir", "deploy/core")
    d.setdefault("backups_dir", "deploy/backups")
    d.setdefault("candidate_roots", ["outputs"])
    return DeployConfig.from_dict(d, base)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="quantloop-deploy", description="Deploy a candidate model safely."
    )
    ap.add_argument("--config", help="YAML with a 'deploy:' section (e.g. conf/judge/default.yaml)")
    ap.add_argument("--core", help="core (deployed model) directory [deploy/core]")
    ap.add_argument("--backups", help="backups directory [deploy/backups]")
    ap.add_argument(
        "--root",
        dest="roots",
        action="append",
        help="a directory candidates may come from (repeatable) [outputs]",
    )
    ap.add_argument("--load-check", choices=LOAD_CHECKS, help="how hard to check the model loads")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("validate", "deploy", "seal"):
        p = sub.add_parser(name)
        p.add_argument("candidate")
    sub.choices["deploy"].add_argument("--source-sweep")
    sub.add_parser("backup")
    sub.add_parser("restore").add_argument("backup")
    sub.add_parser("list-backups")
    sub.add_parser("status")
    sub.add_parser("recover")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "seal":
            out: Any = {
                "sealed": str(Path(args.candidate).resolve()),
                "files": seal(Path(args.candidate)),
            }
        else:
            d = Deployer(load_config(args))
            out = {
                "validate": lambda: d.validate(args.candidate),
                "deploy": lambda: d.deploy(args.candidate, args.source_sweep),
                "backup": d.backup,
                "restore": lambda: d.restore(args.backup),
                "list-backups": d.list_backups,
                "status": d.status,
                "recover": d.recover,
            }[args.cmd]()
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, default=str))
    if args.cmd == "validate" and not out["ok"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
