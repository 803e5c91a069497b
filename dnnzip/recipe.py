"""Recipes: an ordered list of technique and fine-tune steps, in YAML or Python, run by one function.

Each step's result is packed to a real ``.dnz`` file, reloaded from it and measured, so the stage
table (Deep Compression Tables 2-5 style) shows bytes of written files and accuracy after reload.
A run folder resumes: a stage whose file and record exist for the same recipe is not recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from dnnzip import registry
from dnnzip.errors import ConfigError
from dnnzip.io import atomic_json
from dnnzip.registry import Context


@dataclass(frozen=True)
class Step:
    """One recipe step: a registered technique with options, or a fine-tune.

    ``technique`` is a registered name or ``"finetune"``; ``options`` its config dict (for
    ``finetune``: ``epochs``, ``lr``, ``distill`` (bool), ``temperature``, ``alpha``).
    """

    technique: str
    options: dict = field(default_factory=dict)
    name: str | None = None

    def label(self) -> str:
        return self.name or self.technique


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    name: str = "recipe"

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ConfigError("a recipe is a mapping with a 'steps' list (or a bare list of steps);"
                              " each step is {technique: NAME, options: {...}} or {NAME: {...}}")
        steps = []
        for i, raw in enumerate(data["steps"]):
            steps.append(_parse_step(raw, i))
        if not steps:
            raise ConfigError("the recipe has no steps")
        recipe = cls(tuple(steps), str(data.get("name", "recipe")))
        recipe.validate()
        return recipe

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recipe":
        p = Path(path)
        if not p.is_file():
            builtin = Path(__file__).parent / "recipes" / f"{p.name.removesuffix('.yaml')}.yaml"
            if builtin.is_file():
                p = builtin
            else:
                raise ConfigError(f"recipe file {str(path)!r} not found (built-in recipes: "
                                  f"{', '.join(builtin_recipes())})")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe {str(p)!r} is not valid YAML: {exc}") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [
            {"technique": s.technique, "options": s.options, **({"name": s.name} if s.name else {})}
            for s in self.steps]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Every technique exists and every option set builds its config."""
        for s in self.steps:
            if s.technique == "finetune":
                FinetuneOptions.from_dict(s.options)
            else:
                registry.get(s.technique).config(s.options)


def builtin_recipes() -> list[str]:
    folder = Path(__file__).parent / "recipes"
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _parse_step(raw: Any, i: int) -> Step:
    if isinstance(raw, str):
        return Step(raw)
    if isinstance(raw, dict) and "technique" in raw:
        extra = set(raw) - {"technique", "options", "name"}
        if extra:
            raise ConfigError(f"recipe step {i}: unknown key(s) {sorted(extra)}; "
                              "use technique/options/name")
        opts = raw.get("options") or {}
        if not isinstance(opts, dict):
            raise ConfigError(f"recipe step {i}: options must be a mapping")
        return Step(str(raw["technique"]), dict(opts), raw.get("name"))
    if isinstance(raw, dict) and len(raw) == 1:
        (name, opts), = raw.items()
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"recipe step {i}: options of {name!r} must be a mapping")
        return Step(str(name), dict(opts or {}))
    raise ConfigError(f"recipe step {i} is {raw!r}; expected {{technique: NAME, options: {{...}}}}")


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 1
    lr: float | None = None
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.7

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneOptions":
        from dnnzip.config import check_range, from_dict
        opts = from_dict(cls, d)
        check_range(opts, "epochs", 0, None, integer=True)
        check_range(opts, "temperature", 0, None, left_open=True)
        check_range(opts, "alpha", 0.0, 1.0)
        return opts


def finetune_step(model: nn.Module, options: dict, ctx: Context) -> nn.Module:
    """Fine-tune a copy of ``model``; with ``distill`` the loss is KD from ``ctx.teacher``."""
    from dnnzip.train import finetune

    opts = FinetuneOptions.from_dict(options)
    model = registry.fresh_copy(model)
    if opts.epochs == 0 or ctx.data is None:
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model  # a frozen (e.g. integer-quantized) model has nothing left to fine-tune
    hooks: dict[str, Any] = {}
    if opts.distill:
        if ctx.teacher is None:
            raise ConfigError("finetune with distill=true needs a teacher (ctx.teacher)")
        from dnnzip.distill import kd_loss_fn
        hooks["loss_fn"] = kd_loss_fn(ctx.teacher, temperature=opts.temperature, alpha=opts.alpha)
    sub = Context(**{**ctx.__dict__, "epochs": opts.epochs, "lr": opts.lr or ctx.lr})
    finetune(model, sub, **hooks)
    return model


def apply_step(model: nn.Module, step: Step, ctx: Context) -> nn.Module:
    if step.technique == "finetune":
        return finetune_step(model, step.options, ctx)
    return registry.apply(step.technique, model, step.options, ctx)


@dataclass
class StageResult:
    index: int
    label: str
    path: str
    bytes: int
    accuracy: float | None
    params_nonzero: int
    seconds: float
    resumed: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run_recipe(model: nn.Module, recipe: Recipe, ctx: Context, *, out_dir: str | os.PathLike,
               evaluate_stages: bool = True) -> tuple[nn.Module, list[StageResult]]:
    """Run every step; pack, reload and measure after each. Returns (final model, stage table).

    Stage 0 is the input model. The run folder keeps ``stages.json``; rerunning the same recipe in
    the same folder reloads finished stages from their files instead of recomputing them.
    """
    from dnnzip.artifact import pack, unpack
    from dnnzip.train import evaluate
    from dnnzip.profile import count_params

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "stages.json"
    digest = recipe.digest()
    done: list[dict] = []
    if record_path.is_file():
        rec = json.loads(record_path.read_text())
        if rec.get("recipe_digest") == digest:
            done = rec.get("stages", [])
    if ctx.teacher is None:
        ctx = Context(**{**ctx.__dict__, "teacher": model})

    def measure(i: int, label: str, m: nn.Module, t0: float) -> tuple[nn.Module, StageResult]:
        path = out / f"stage{i:02d}_{label.replace('.', '-')}.dnz"
        nbytes = pack(m, path, meta={"recipe": recipe.to_dict(), "stage": i})
        reloaded = unpack(path)
        acc = None
        if evaluate_stages and ctx.data is not None:
            acc = evaluate(reloaded, ctx.data.test)
        return reloaded, StageResult(i, label, str(path), nbytes, acc, count_params(reloaded)[1],
                                     time.perf_counter() - t0)

    stages: list[StageResult] = []
    current = model
    for i, label in enumerate(["baseline"] + [s.label() for s in recipe.steps]):
        t0 = time.perf_counter()
        if i < len(done) and Path(done[i]["path"]).is_file():
            current = unpack(done[i]["path"])
            stages.append(StageResult(**{**done[i], "resumed": True}))
            continue
        if i > 0:
            current = apply_step(current, recipe.steps[i - 1], ctx)
        current, result = measure(i, label, current, t0)
        stages.append(result)
        atomic_json(record_path, {"recipe_digest": digest,
                                   "stages": [s.to_dict() for s in stages]})
    return current, stages
