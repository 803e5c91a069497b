"""The ``dnnzip`` command line: argument parsing → library calls, no logic of its own.

Exit codes: 0 success, 1 failure (budget not met), 2 usage or input error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from dnnzip.errors import DnnzipError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress trained DNNs until they fit an edge device's budget.")
out = Console()
err = Console(stderr=True)


class _State:
    json: bool = False
    quiet: bool = False


state = _State()


@app.callback()
def _main(json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables.")):
    state.json = json_
    state.quiet = quiet


def emit(data: Any, render=None) -> None:
    """Print ``data`` as JSON with --json, else via ``render`` (unless --quiet)."""
    if state.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif not state.quiet:
        if render is not None:
            render(data)
        else:
            out.print(data)


def _kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--kwargs must be a JSON object, e.g. '{{\"width\": 0.5}}': {exc}")
    if not isinstance(value, dict):
        raise typer.BadParameter("--kwargs must be a JSON object")
    return value


def _data(spec: str | None, data_dir: str | None, seed: int = 0, limit: int | None = None,
          download: bool = False):
    if spec is None:
        return None
    from dnnzip.data import load_data
    return load_data(spec, data_dir=data_dir, seed=seed, limit=limit, download=download)


def _model(spec: str, arch: str | None, kwargs: str | None, trust_pickle: bool, data=None):
    from dnnzip.load import load_model
    kw = _kwargs(kwargs)
    from dnnzip import zoo
    if data is not None and arch is None and spec in zoo.names() and not Path(spec).exists():
        from dnnzip.load import kwargs_for_data
        kw = {**kwargs_for_data(spec, data), **kw}
    return load_model(spec, arch=arch, kwargs=kw, trust_pickle=trust_pickle)


MODEL = typer.Argument(..., help="zoo name, .dnz artifact, or weights file (.safetensors/.pt)")
ARCH = typer.Option(None, "--arch", help="zoo name or pkg.module:build for a bare weights file")
KWARGS = typer.Option(None, "--kwargs", help="JSON model kwargs, e.g. '{\"width\": 0.5}'")
TRUST = typer.Option(False, "--trust-pickle",
                     help="Allow unpickling a .pt file (executes code from the file!)")
DATA = typer.Option(None, "--data", help="fashion-mnist, digits, mnist1d, npz:PATH, folder:PATH")
DATA_DIR = typer.Option(None, "--data-dir", help="where the dataset files are")
LIMIT = typer.Option(None, "--limit", help="use at most this many training samples")


@app.command()
def zoo():
    """List models and datasets."""
    from dnnzip import zoo as z
    from dnnzip.data import names as dataset_names
    from dnnzip import registry
    data = {"models": {n: z.info(n) for n in z.names()}, "datasets": list(dataset_names()),
            "techniques": registry.names()}

    def render(d):
        from rich.table import Table
        t = Table(title="models")
        for c in ("name", "params", "input", "description"):
            t.add_column(c)
        for n, i in d["models"].items():
            t.add_row(n, f"{i.get('params', '?'):,}", str(i.get("input_shape")), i.get("description", ""))
        out.print(t)
        out.print("datasets: " + ", ".join(d["datasets"]))
        out.print("techniques: " + ", ".join(d["techniques"]))
    emit(data, render)


@app.command()
def train(model: str = typer.Argument(..., help="zoo name"),
          data: str = typer.Option("fashion-mnist", "--data"),
          data_dir: Optional[str] = DATA_DIR,
          output: Path = typer.Option(..., "-o", "--output", help="weights file (.safetensors)"),
          epochs: int = typer.Option(15, "--epochs"),
          lr: Optional[float] = typer.Option(None, "--lr"),
          batch_size: int = typer.Option(128, "--batch-size"),
          seed: int = typer.Option(0, "--seed"),
          kwargs: Optional[str] = KWARGS,
          limit: Optional[int] = LIMIT,
          download: bool = typer.Option(False, "--download", help="download the dataset (internet)"),
          checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                                    help="resumable checkpoint file")):
    """Train a zoo model; writes safetensors weights that rebuild on their own."""
    from dnnzip.train import TrainSettings, evaluate, fit
    from dnnzip.load import save_trained
    bundle = _data(data, data_dir, seed, limit, download)
    net = _model(model, None, kwargs, False, bundle)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, seed=seed,
                             progress=not state.quiet and not state.json,
                             **({"lr": lr} if lr is not None else {}))
    result = fit(net, bundle, settings, checkpoint=checkpoint)
    acc = evaluate(net, bundle.test)
    nbytes = save_trained(net, output)
    emit({"model": model, "data": data, "test_accuracy": acc, "epochs_run": len(result.history),
          "weights": str(output), "bytes": nbytes},
         lambda d: out.print(f"[bold]{model}[/] test accuracy {acc:.4f} after "
                             f"{d['epochs_run']} epochs → {output} ({nbytes:,} B)"))


@app.command("eval")
def eval_(model: str = MODEL, data: str = typer.Option("fashion-mnist", "--data"),
          data_dir: Optional[str] = DATA_DIR, arch: Optional[str] = ARCH,
          kwargs: Optional[str] = KWARGS, trust_pickle: bool = TRUST,
          capacity: Optional[int] = typer.Option(None, "--capacity",
                                                 help="NestDNN capacity index to run"),
          runtime: str = typer.Option("torch", "--runtime", help="torch or onnxruntime")):
    """Evaluate a model or artifact on the test split."""
    from dnnzip.evaluation import evaluate_on
    bundle = _data(data, data_dir)
    net = _model(model, arch, kwargs, trust_pickle, bundle)
    if capacity is not None:
        from dnnzip.capacity import set_capacity
        net = set_capacity(net, capacity)
    acc = evaluate_on(net, bundle, runtime=runtime)
    emit({"model": model, "data": data, "runtime": runtime, "test_accuracy": acc},
         lambda d: out.print(f"test accuracy {acc:.4f} ({runtime})"))


@app.command()
def profile(model: str = MODEL, data: Optional[str] = DATA, data_dir: Optional[str] = DATA_DIR,
            arch: Optional[str] = ARCH, kwargs: Optional[str] = KWARGS,
            trust_pickle: bool = TRUST,
            runtime: list[str] = typer.Option(["torch", "onnxruntime"], "--runtime"),
            batch_size: int = typer.Option(1, "--batch-size"),
            threads: int = typer.Option(1, "--threads"),
            repeats: int = typer.Option(200, "--repeats"),
            max_size: Optional[str] = typer.Option(None, "--max-size"),
            max_latency: Optional[str] = typer.Option(None, "--max-latency"),
            max_energy: Optional[str] = typer.Option(None, "--max-energy"),
            min_accuracy: Optional[str] = typer.Option(None, "--min-accuracy")):
    """Measure a model: params, MACs, file bytes, latency, memory, energy (estimated), accuracy.

    With budget options, exits 1 when the model does not fit.
    """
    from dnnzip.budget import Budget
    from dnnzip.profile import profile as run_profile, render_table
    budget = Budget.parse(max_size=max_size, max_latency=max_latency, max_energy=max_energy,
                          min_accuracy=min_accuracy, runtime=runtime[0])
    import tempfile
    from dnnzip.artifact import pack as do_pack
    bundle = _data(data, data_dir)
    net = _model(model, arch, kwargs, trust_pickle, bundle)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = model if model.endswith(".dnz") else str(Path(tmp) / "model.dnz")
        if artifact != model:  # the size is that of a real packed file, never a guess
            do_pack(net, artifact)
        prof = run_profile(net, bundle, runtimes=tuple(runtime), batch_size=batch_size,
                           threads=threads, repeats=repeats, artifact=artifact)
    d = prof.to_dict()
    problems = budget.violations(**prof.budget_point(budget.runtime)) if not budget.is_empty() else []
    d["budget"] = {"constraints": budget.describe(), "violations": problems, "fits": not problems}
    emit(d, lambda _: out.print(render_table(prof)))
    if problems:
        err.print("[red]does not fit the budget:[/] " + "; ".join(problems))
        raise typer.Exit(1)


@app.command()
def pack(model: str = MODEL, output: Path = typer.Option(..., "-o", "--output"),
         arch: Optional[str] = ARCH, kwargs: Optional[str] = KWARGS, trust_pickle: bool = TRUST):
    """Pack a model into a .dnz artifact (atomic write)."""
    from dnnzip.artifact import pack as do_pack
    net = _model(model, arch, kwargs, trust_pickle)
    n = do_pack(net, output)
    emit({"artifact": str(output), "bytes": n}, lambda d: out.print(f"{output}: {n:,} B"))


@app.command()
def unpack(artifact: Path = typer.Argument(...), output: Path = typer.Option(..., "-o", "--output")):
    """Unpack a .dnz artifact to dense safetensors weights (+ its manifest as JSON)."""
    from dnnzip.artifact import read_manifest, unpack as do_unpack
    from dnnzip.load import save_trained
    net = do_unpack(artifact)
    n = save_trained(net, output)
    manifest = read_manifest(artifact)
    emit({"artifact": str(artifact), "weights": str(output), "bytes": n,
          "model": manifest.get("model")},
         lambda d: out.print(f"{artifact} → {output} ({n:,} B)"))


@app.command()
def export(artifact: str = MODEL, output: Path = typer.Option(..., "-o", "--output"),
           format: str = typer.Option("onnx", "--format", help="onnx | onnx-int8 | c"),
           data: Optional[str] = DATA, data_dir: Optional[str] = DATA_DIR,
           arch: Optional[str] = ARCH, trust_pickle: bool = TRUST):
    """Export a model to ONNX (fp32 or int8 QDQ) or C."""
    from dnnzip.export import export_model
    bundle = _data(data, data_dir)
    net = _model(artifact, arch, None, trust_pickle, bundle)
    path = export_model(net, output, format=format, data=bundle)
    emit({"output": str(path), "format": format, "bytes": Path(path).stat().st_size},
         lambda d: out.print(f"{path} ({d['bytes']:,} B, {format})"))


@app.command()
def compress(model: str = MODEL, recipe: str = typer.Option(..., "--recipe"),
             data: str = typer.Option("fashion-mnist", "--data"),
             data_dir: Optional[str] = DATA_DIR, output: Path = typer.Option(..., "-o"),
             arch: Optional[str] = ARCH, kwargs: Optional[str] = KWARGS,
             trust_pickle: bool = TRUST, epochs: int = typer.Option(1, "--epochs"),
             limit: Optional[int] = LIMIT, seed: int = typer.Option(0, "--seed")):
    """Run a recipe (YAML) step by step; every stage is packed, reloaded and measured."""
    from dnnzip.recipe import Recipe, run_recipe
    from dnnzip.registry import Context
    r = Recipe.load(recipe)
    bundle = _data(data, data_dir, seed, limit)
    net = _model(model, arch, kwargs, trust_pickle, bundle)
    ctx = Context(data=bundle, epochs=epochs, seed=seed,
                  progress=not state.quiet and not state.json)
    _, stages = run_recipe(net, r, ctx, out_dir=output)
    rows = [s.to_dict() for s in stages]
    base = rows[0]["bytes"]

    def render(_):
        from rich.table import Table
        t = Table(title=f"{r.name}: stage table")
        for c in ("stage", "bytes", "ratio", "accuracy", "non-zero params"):
            t.add_column(c, justify="right")
        for s in rows:
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
            t.add_row(s["label"], f"{s['bytes']:,}", f"{base / s['bytes']:.1f}x", acc,
                      f"{s['params_nonzero']:,}")
        out.print(t)
    emit({"recipe": r.to_dict(), "stages": rows}, render)


@app.command()
def auto(model: str = MODEL, data: str = typer.Option("fashion-mnist", "--data"),
         data_dir: Optional[str] = DATA_DIR, output: Path = typer.Option(..., "-o"),
         arch: Optional[str] = ARCH, kwargs: Optional[str] = KWARGS, trust_pickle: bool = TRUST,
         max_size: Optional[str] = typer.Option(None, "--max-size", help="e.g. 64KB"),
         max_latency: Optional[str] = typer.Option(None, "--max-latency", help="e.g. 0.2ms"),
         max_energy: Optional[str] = typer.Option(None, "--max-energy", help="e.g. 0.01mJ"),
         min_accuracy: Optional[str] = typer.Option(None, "--min-accuracy", help="e.g. 0.88"),
         max_accuracy_drop: Optional[str] = typer.Option(None, "--max-accuracy-drop",
                                                         help="e.g. 1%"),
         runtime: str = typer.Option("onnxruntime", "--runtime"),
         trials: int = typer.Option(20, "--trials"),
         sampler: str = typer.Option("tpe", "--sampler", help="tpe | nsga2 | random"),
         families: Optional[str] = typer.Option(None, "--families",
                                                help="comma list, e.g. connection,share,int8"),
         epochs: int = typer.Option(1, "--epochs", help="fine-tune epochs per trial"),
         final_epochs: int = typer.Option(2, "--final-epochs"),
         max_batches: Optional[int] = typer.Option(None, "--max-batches"),
         storage: Optional[str] = typer.Option(None, "--storage",
                                               help="Optuna storage URL (default: SQLite in -o)"),
         workers: int = typer.Option(1, "--workers"),
         study: str = typer.Option("dnnzip-auto", "--study", help="study name in the storage"),
         seed: int = typer.Option(0, "--seed"), limit: Optional[int] = LIMIT):
    """Choose the combination of techniques that fits the budget (AdaDeep, Eq. 25-27)."""
    from dnnzip.budget import Budget
    from dnnzip.search import AutoConfig, auto as run_auto
    from dnnzip.search.space import SearchSpace
    budget = Budget.parse(max_size=max_size, max_latency=max_latency, max_energy=max_energy,
                          min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop,
                          runtime=runtime)
    cfg = AutoConfig(trials=trials, sampler=sampler, seed=seed, finetune_epochs=epochs,
                     final_epochs=final_epochs, max_batches=max_batches,
                     families=tuple(families.split(",")) if families else SearchSpace().families)
    bundle = _data(data, data_dir, seed, limit)
    net = _model(model, arch, kwargs, trust_pickle, bundle)
    result = run_auto(net, bundle, budget, out_dir=output, config=cfg, storage=storage,
                      workers=workers, model_spec=model, data_spec=data, study_name=study,
                      progress=not state.quiet and not state.json)
    from dnnzip.report.summary import render_summary
    emit(result.to_dict(), lambda d: out.print(render_summary(d)))


@app.command("worker")
def worker_cmd(storage: str = typer.Option(..., "--storage", help="the study's storage URL"),
               study: str = typer.Option("dnnzip-auto", "--study", help="study name"),
               output: Optional[Path] = typer.Option(None, "-o", help="folder for trial files")):
    """Join a running search (e.g. on PostgreSQL) and run trials until it has enough."""
    from dnnzip.search import worker
    n = worker(storage, study_name=study, out_dir=output,
               progress=not state.quiet and not state.json)
    emit({"trials_run": n}, lambda d: out.print(f"ran {n} trial(s)"))


@app.command()
def report(run: Path = typer.Argument(..., help="run folder of dnnzip auto or compress")):
    """(Re-)render runs/x/report.html from what the run folder holds."""
    from dnnzip.report import render_run
    path = render_run(run)
    emit({"report": str(path)}, lambda d: out.print(f"wrote {path}"))


@app.command()
def demo(output: Path = typer.Option(Path("runs/demo"), "-o"),
         quick: bool = typer.Option(False, "--quick", help="a few-minute version")):
    """The main job end to end on the embedded default: LeNet-5 on Fashion-MNIST under a budget."""
    from dnnzip.demo import run_demo
    from dnnzip.report.summary import render_summary
    result = run_demo(output, quick=quick, progress=not state.quiet and not state.json)
    emit(result, lambda d: out.print(render_summary(d)))


_GLOBAL_FLAGS = ("--json", "--quiet", "-q")


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept ``dnnzip profile lenet5 --json`` as well as ``dnnzip --json profile lenet5``."""
    flags = [a for a in argv if a in _GLOBAL_FLAGS]
    return flags + [a for a in argv if a not in _GLOBAL_FLAGS]


def main(argv: list[str] | None = None) -> None:
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        rc = app(args=args, standalone_mode=False, prog_name="dnnzip")
        if isinstance(rc, int) and rc:  # typer.Exit(code) comes back as a return value
            sys.exit(rc)
    except DnnzipError as exc:
        err.print(f"[red]{type(exc).__name__}:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        try:
            from click.exceptions import ClickException
        except ImportError:  # typer >= 0.26 vendors click
            from typer._click.exceptions import ClickException
        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
