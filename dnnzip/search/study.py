"""``dnnzip auto``: AdaDeep-style search over recipes under a device budget, on Optuna.

Every trial runs a recipe with a short fine-tune, packs the result, reloads the file and measures
it (bytes, latency on the budget's runtime, estimated energy, validation accuracy). The best few
feasible trials are fine-tuned longer and measured again, on the test split too. The study lives in
Optuna storage (SQLite in the run folder unless ``storage`` says otherwise), so a killed run
resumes without losing or recomputing a completed trial, and several workers can share it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from torch import nn

from dnnzip.budget import Budget
from dnnzip.config import check_choice, check_range, coerce_tuple
from dnnzip.errors import BudgetError, ConfigError, UnsupportedLayerError
from dnnzip.io import atomic_json
from dnnzip.recipe import Recipe, Step, run_recipe
from dnnzip.registry import Context
from dnnzip.search import storage as st
from dnnzip.search.measure import Measurement, measure_artifact
from dnnzip.search.objective import AdaDeepObjective, Point
from dnnzip.search.space import SearchSpace

RUN_FORMAT = 1
CONSTRAINT_KEYS = ("latency", "storage", "energy", "accuracy")  # AdaDeep Eq. 26, 27, E, floor
INVALID_SCORE, INVALID_PENALTY = -10.0, 10.0  # a recipe that cannot apply to the model


@dataclass(frozen=True)
class AutoConfig:
    """Search settings.

    trials: completed trials wanted in the study (a resumed run only adds the missing ones).
    sampler: "tpe" (AdaDeep objective, Eq. 25-27, constraints), "nsga2" (Pareto front of
    accuracy vs bytes vs latency), or "random" (the baseline the benchmark compares against).
    finetune_epochs / final_epochs: per-trial and finalist fine-tuning. finalists: how many of
    the best feasible trials get the longer fine-tune. max_batches: cap per epoch (quick runs).
    """

    trials: int = 20
    sampler: str = "tpe"
    seed: int = 0
    families: tuple[str, ...] = SearchSpace().families
    finetune_epochs: int = 1
    final_epochs: int = 2
    finalists: int = 2
    max_batches: int | None = None
    latency_repeats: int = 50
    lambda1: float = 1.0
    lambda2: float = 1.0
    warm_start: bool = True

    def __post_init__(self):
        coerce_tuple(self, "families")
        check_range(self, "trials", 1, 10_000, integer=True)
        check_choice(self, "sampler", ("tpe", "nsga2", "random"))
        check_range(self, "finetune_epochs", 0, 100, integer=True)
        check_range(self, "final_epochs", 0, 1000, integer=True)
        check_range(self, "finalists", 0, 100, integer=True)
        unknown = set(self.families) - set(SearchSpace().families) - {"binary"}
        if unknown:
            raise ConfigError(f"unknown famil(ies) {sorted(unknown)} in AutoConfig.families; "
                              f"choose from {sorted(set(SearchSpace().families) | {'binary'})}")


@dataclass
class AutoResult:
    best_path: str | None
    best: dict | None
    baseline: dict
    trials: list[dict] = field(default_factory=list)
    finalists: list[dict] = field(default_factory=list)
    out_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _sampler(cfg: AutoConfig) -> optuna.samplers.BaseSampler:
    """TPE / NSGA-II read the constraints each trial records with ``trial.set_constraint``
    (feasible iff every value <= 0), so infeasible trials never outrank feasible ones."""
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=8)
    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=6, multivariate=True)


class Search:
    """One search: owns the run folder, the study and the measurement of each trial."""

    def __init__(self, model: nn.Module, data, budget: Budget, *, out_dir: str | os.PathLike,
                 config: AutoConfig = AutoConfig(), storage: str | None = None,
                 model_spec: str | None = None, data_spec: str | None = None,
                 progress: bool = False, study_name: str = st.STUDY_NAME):
        if budget.is_empty():
            raise ConfigError("auto needs at least one constraint: --max-size, --max-latency, "
                              "--max-energy, --min-accuracy or --max-accuracy-drop")
        self.model, self.data, self.budget, self.cfg = model.eval(), data, budget, config
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.space = SearchSpace(config.families, config.finetune_epochs).restrict_to(model)
        self.url = st.storage_url(self.out, storage)
        self.study_name = study_name
        self._check_run_folder(model_spec, data_spec)
        self.baseline = self._baseline()
        self.objective = AdaDeepObjective(budget, self.baseline.point(), config.lambda1,
                                          config.lambda2)
        self.study = self._open_study()

    # -- run folder ---------------------------------------------------------------------------
    def _check_run_folder(self, model_spec, data_spec) -> None:
        run = self.out / "run.json"
        info = {"format": RUN_FORMAT, "model": model_spec, "data": data_spec,
                "budget": asdict(self.budget), "config": asdict(self.cfg), "storage": self.url,
                "study": self.study_name}
        if run.is_file():
            old = json.loads(run.read_text())
            if old.get("format") != RUN_FORMAT:
                raise ConfigError(f"run folder {str(self.out)!r} was written by an incompatible "
                                  f"dnnzip (run format {old.get('format')}, this one reads "
                                  f"{RUN_FORMAT}); use a new -o folder")
            if old.get("config", {}).get("sampler") != self.cfg.sampler:
                raise ConfigError(f"run folder {str(self.out)!r} holds a {old['config']['sampler']}"
                                  f" study; resume it with the same --sampler or use a new -o")
        atomic_json(run, info)
        self.run_info = info

    def _baseline(self) -> Measurement:
        path = self.out / "baseline.json"
        if path.is_file():
            return Measurement(**json.loads(path.read_text()))
        from dnnzip.artifact import pack
        art = self.out / "baseline.dnz"
        pack(self.model, art)
        m = measure_artifact(art, self.data, runtime=self.budget.runtime,
                             repeats=self.cfg.latency_repeats, with_test=True)
        atomic_json(path, m.to_dict())
        return m

    def _open_study(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = st.open_storage(self.url)
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, load_if_exists=True,
            sampler=_sampler(self.cfg),
            **({"directions": ["maximize", "minimize", "minimize"]}
               if self.cfg.sampler == "nsga2" else {"direction": "maximize"}))
        study.set_user_attr("run", json.loads(json.dumps(self.run_info, default=str)))
        if self.cfg.warm_start and not study.get_trials(deepcopy=False):
            for params in self.space.warm_starts():
                study.enqueue_trial(params, skip_if_exists=True)
        recovered = st.recover_dead_local_trials(study)
        if recovered:
            self.note(f"recovered {recovered} trial(s) left running by a killed process")
        return study

    def note(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    # -- trials ---------------------------------------------------------------------------------
    def context(self, epochs: int) -> Context:
        return Context(data=self.data, teacher=self.model, epochs=epochs,
                       max_batches=self.cfg.max_batches, seed=self.cfg.seed, progress=False)

    def evaluate_recipe(self, recipe: Recipe, folder: Path, *, epochs: int,
                        with_test: bool = False) -> Measurement:
        """Run ``recipe`` in ``folder`` (resumable), then measure its final artifact."""
        _, stages = run_recipe(self.model, recipe, self.context(epochs), out_dir=folder,
                               evaluate_stages=False)
        return measure_artifact(stages[-1].path, self.data, runtime=self.budget.runtime,
                                repeats=self.cfg.latency_repeats, with_test=with_test)

    def _values(self, m: Measurement):
        if self.cfg.sampler == "nsga2":
            return m.accuracy, float(m.bytes), m.latency_ms
        return self.objective.score(m.point())

    def _trial(self, trial: optuna.Trial):
        trial.set_user_attr("worker", st.worker_id())
        recipe = self.space.sample(trial)
        digest = recipe.digest()
        cache = self.out / "trials" / digest
        cached, failed = cache / "measurement.json", cache / "error.json"
        trial.set_user_attr("recipe", recipe.to_dict())
        trial.set_user_attr("digest", digest)
        if failed.is_file():
            trial.set_user_attr("reused", True)
            return self._invalid(trial, recipe, json.loads(failed.read_text())["error"])
        if cached.is_file():
            m = Measurement(**json.loads(cached.read_text()))
            trial.set_user_attr("reused", True)
        else:
            try:
                m = self.evaluate_recipe(recipe, cache, epochs=self.cfg.finetune_epochs)
            except (ConfigError, UnsupportedLayerError) as exc:
                atomic_json(failed, {"error": str(exc)})
                return self._invalid(trial, recipe, str(exc))
            atomic_json(cached, m.to_dict())
        p = m.point()
        trial.set_user_attr("measurement", m.to_dict())
        constraints = self.objective.constraints(p)
        trial.set_user_attr("constraints", constraints)
        for key, value in zip(CONSTRAINT_KEYS, constraints):
            trial.set_constraint(key, value)
        trial.set_user_attr("feasible", self.objective.feasible(p))
        trial.set_user_attr("score", self.objective.score(p))
        self.note(f"trial {trial.number}: {recipe.name} → {m.bytes:,} B, {m.latency_ms:.3f} ms, "
                  f"acc {m.accuracy:.4f}{'' if self.objective.feasible(p) else ' (infeasible)'}")
        return self._values(m)

    def _invalid(self, trial: optuna.Trial, recipe: Recipe, error: str):
        """A sampled recipe that cannot apply to this model (e.g. global pruning that would empty
        a small layer) is a *completed, infeasible* trial with the worst score, not a failed one:
        TPE ignores failed trials and would keep proposing the same region, while infeasible
        trials teach it to move away. Recorded without a measurement, and cached by digest."""
        trial.set_user_attr("error", error)
        trial.set_user_attr("constraints", [INVALID_PENALTY] * len(CONSTRAINT_KEYS))
        for key in CONSTRAINT_KEYS:
            trial.set_constraint(key, INVALID_PENALTY)
        trial.set_user_attr("feasible", False)
        trial.set_user_attr("score", INVALID_SCORE)
        self.note(f"trial {trial.number}: {recipe.name} is invalid for this model: {error}")
        if self.cfg.sampler == "nsga2":
            return 0.0, float(self.baseline.bytes) * INVALID_PENALTY, \
                self.baseline.latency_ms * INVALID_PENALTY
        return INVALID_SCORE

    def completed(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]

    def run_trials(self) -> None:
        """Run trials until the study has ``cfg.trials`` completed ones (shared by all workers)."""
        remaining = self.cfg.trials - len(self.completed())
        if remaining <= 0:
            return
        cb = optuna.study.MaxTrialsCallback(self.cfg.trials, states=(TrialState.COMPLETE,))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study.optimize(self._trial, n_trials=remaining, callbacks=[cb],
                            catch=(RuntimeError, ValueError))

    # -- finalists --------------------------------------------------------------------------
    def finalize(self) -> AutoResult:
        trials = self.completed()
        rows = [{"number": t.number, "recipe": t.user_attrs.get("recipe"),
                 "measurement": t.user_attrs.get("measurement"),
                 "feasible": t.user_attrs.get("feasible"), "score": t.user_attrs.get("score"),
                 "reused": t.user_attrs.get("reused", False)} for t in trials]
        feasible = sorted((t for t in trials if t.user_attrs.get("feasible")),
                          key=lambda t: -t.user_attrs["score"])
        finals = []
        for t in feasible[: self.cfg.finalists]:
            recipe = Recipe.from_dict(t.user_attrs["recipe"])
            if self.cfg.final_epochs > 0:  # the longer fine-tune, distilled from the baseline
                recipe = Recipe(tuple(
                    Step("finetune", {**s.options, "epochs": self.cfg.final_epochs,
                                      "distill": True}, name="final-finetune+kd")
                    if s.technique == "finetune" else s for s in recipe.steps), recipe.name)
            folder = self.out / "finalists" / f"trial{t.number:04d}"
            m = self.evaluate_recipe(recipe, folder,
                                     epochs=max(self.cfg.final_epochs, self.cfg.finetune_epochs),
                                     with_test=True)
            stages = json.loads((folder / "stages.json").read_text())["stages"]
            finals.append({"number": t.number, "recipe": recipe.to_dict(),
                           "measurement": m.to_dict(), "feasible": self.objective.feasible(m.point()),
                           "score": self.objective.score(m.point()), "path": stages[-1]["path"],
                           "stages": stages})
        # a finalist whose longer fine-tune broke a constraint falls back to its trial numbers
        ok = sorted((f for f in finals if f["feasible"]), key=lambda f: -f["score"])
        result = AutoResult(None, None, self.baseline.to_dict(), rows, finals, str(self.out))
        if ok:
            best = ok[0]
            dst = self.out / "best.dnz"
            shutil.copyfile(best["path"], dst.with_suffix(".tmp"))
            os.replace(dst.with_suffix(".tmp"), dst)
            (self.out / "best-recipe.yaml").write_text(Recipe.from_dict(best["recipe"]).to_yaml())
            result.best_path, result.best = str(dst), best
        atomic_json(self.out / "summary.json", result.to_dict())
        if not ok:
            raise self._budget_error(trials)
        return result

    def _budget_error(self, trials) -> BudgetError:
        measured = [t for t in trials if t.user_attrs.get("measurement")]
        if not measured:
            errors = sorted({t.user_attrs["error"] for t in trials if t.user_attrs.get("error")})
            return BudgetError("no trial completed; nothing to compare with the budget" +
                               (f" (every proposed recipe was invalid for this model, e.g. "
                                f"{errors[0]})" if errors else ""))
        trials = measured
        def dist(t):
            return self.objective.distance(Point(**{k: t.user_attrs["measurement"][k] for k in
                                                    ("bytes", "latency_ms", "energy_mj",
                                                     "accuracy")}))
        best = min(trials, key=dist)
        m = best.user_attrs["measurement"]
        why = self.budget.violations(bytes_=m["bytes"], latency_ms=m["latency_ms"],
                                     energy_mj=m["energy_mj"], accuracy=m["accuracy"],
                                     baseline_accuracy=self.baseline.accuracy)
        closest = {"trial": best.number, "recipe": best.user_attrs["recipe"], **m,
                   "violations": why}
        return BudgetError(
            f"no model in {len(trials)} trials met the budget ({self.budget.describe()}); the "
            f"closest, trial {best.number} ({best.user_attrs['recipe']['name']}), reached "
            f"{m['bytes']:,} B, {m['latency_ms']:.3g} ms, accuracy {m['accuracy']:.4f}: "
            f"{'; '.join(why) or 'its longer fine-tune broke the budget'}. The study is kept in "
            f"{self.url}: rerun with a looser budget and the same -o to reuse its trials.",
            closest)


def auto(model: nn.Module, data, budget: Budget, *, out_dir: str | os.PathLike,
         config: AutoConfig = AutoConfig(), storage: str | None = None, workers: int = 1,
         model_spec: str | None = None, data_spec: str | None = None,
         progress: bool = False, study_name: str = st.STUDY_NAME) -> AutoResult:
    """Search, fine-tune the finalists, write ``best.dnz``, ``summary.json`` and the report."""
    search = Search(model, data, budget, out_dir=out_dir, config=config, storage=storage,
                    model_spec=model_spec, data_spec=data_spec, progress=progress,
                    study_name=study_name)
    procs = _spawn_workers(search, workers - 1)
    try:
        search.run_trials()
    finally:
        for p in procs:
            p.wait()
    try:
        result = search.finalize()
    except BudgetError:
        _render_report(search.out)  # the report shows the closest points too
        raise
    _render_report(search.out)
    return result


def _spawn_workers(search: Search, n: int) -> list:
    import subprocess
    import sys
    if n <= 0:
        return []
    if not search.run_info.get("model") or not search.run_info.get("data"):
        raise ConfigError("--workers needs the model and data given as a path/name (not a Python "
                          "object) so that worker processes can load them")
    cmd = [sys.executable, "-m", "dnnzip.cli", "--quiet", "worker", "--storage", search.url,
           "--study", search.study_name, "-o", str(search.out)]
    return [subprocess.Popen(cmd) for _ in range(n)]


def _render_report(out: Path) -> None:
    try:
        from dnnzip.report import render_run
    except ImportError:
        return
    render_run(out)


def worker(storage_url: str, *, study_name: str = st.STUDY_NAME,
           out_dir: str | os.PathLike | None = None, progress: bool = False) -> int:
    """Join an existing study: rebuild its model/data/budget from the study and run trials.

    Trial folders go to ``out_dir`` (default: the study's own folder for SQLite, else
    ``runs/worker-HOST-PID``). Returns how many trials this worker completed.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=st.open_storage(storage_url))
    except KeyError:
        raise ConfigError(f"no study named {study_name!r} in {storage_url!r}; start it with "
                          "dnnzip auto (same --storage and --study)") from None
    run = study.user_attrs.get("run")
    if not run:
        raise ConfigError(f"study in {storage_url!r} has no run description; start it with "
                          "dnnzip auto first")
    from dnnzip.data import load_data
    from dnnzip.load import load_model
    data = load_data(run["data"], seed=run["config"].get("seed", 0))
    model = load_model(run["model"])
    cfg = AutoConfig(**{**run["config"], "families": tuple(run["config"]["families"])})
    if out_dir is None:
        out_dir = (Path(run["storage"].removeprefix("sqlite:///")).parent
                   if run["storage"].startswith("sqlite")
                   else Path(f"runs/worker-{st.worker_id().replace(':', '-')}"))
    s = Search(model, data, Budget(**run["budget"]), out_dir=out_dir, config=cfg,
               storage=storage_url, model_spec=run["model"], data_spec=run["data"],
               progress=progress, study_name=study_name)
    mine = st.worker_id()
    s.run_trials()
    return sum(1 for t in s.completed() if t.user_attrs.get("worker") == mine)
