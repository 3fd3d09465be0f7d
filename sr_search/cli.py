"""`sr-search`: a thin typer layer over the library. Parses, calls, prints; `SrSearchError` -> exit 1,
any other failure -> exit 2 (docs/architecture.md, "CLI")."""

from __future__ import annotations

import functools
import inspect as pyinspect
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Callable, Optional

import typer
from typer.core import TyperGroup

from .errors import SrSearchError, StudyDataWarning, StudyStopped, StudyWriteError


class _Commands(TyperGroup):
    """Plain help whose command list shows each command's first paragraph whole (wrapped), where click would cut
    it at the terminal width with '...'."""

    def format_commands(self, ctx, formatter) -> None:  # noqa: ANN001 - click's signature
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                first = pyinspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
                rows.append((name, " ".join(first.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _Cli(typer.Typer):
    """The app, with one fast path: `sr-search status DIR [--recount]`, which users run in a loop (`watch`), is
    called directly, skipping the parser's type layer (typer builds a pydantic adapter per parameter on every
    invocation: most of a status call's start-up). Anything else, `--help` included, goes through typer."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003 - typer's signature
        argv = sys.argv[1:]
        if not args and not kwargs and len(argv) in (2, 3) and argv[0] == "status" \
                and not argv[1].startswith("-") and argv[2:] in ([], ["--recount"]):
            try:
                status(Path(argv[1]), recount=len(argv) == 3)
            except typer.Exit as done:
                sys.exit(done.exit_code)
            sys.exit(0)
        return super().__call__(*args, **kwargs)


app = _Cli(
    cls=_Commands,
    help="Architecture search and ablations for efficient super-resolution.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click help: no `<bool>` after flags, no box drawing in logs, and no rich import on --help
    rich_markup_mode=None,
)

EXIT_BAD_INPUT = 1
EXIT_RUNTIME = 2
#: a study stopped before its end (Ctrl-C): what finished is kept; `launch --resume` runs the rest
EXIT_STOPPED = 130
#: the reader of our output went away (`sr-search presets | head`): what a process killed by SIGPIPE returns
EXIT_BROKEN_PIPE = 141


def _guarded(fn: Callable) -> Callable:
    """Turn library errors into a one-screen message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe fails here, inside the guard, not at interpreter exit
            return result
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except SrSearchError as exc:
            typer.echo(_relative_text(f"error: {exc}"), err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except StudyStopped as exc:
            typer.echo(_relative_text(str(exc)), err=True)
            raise typer.Exit(EXIT_STOPPED) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_STOPPED) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if os.environ.get("SR_SEARCH_DEBUG"):
                traceback.print_exc()
            unwritten = _in_chain(exc, StudyWriteError)  # a full disk, possibly wrapped by Ray Tune
            if unwritten is not None:
                typer.echo(_relative_text(f"runtime failure: {unwritten}; everything written before it is kept and "
                                          f"no partial file is left: free space, then continue with launch --resume"),
                           err=True)
                raise typer.Exit(EXIT_RUNTIME) from None
            typer.echo(_relative_text(f"runtime failure: {type(exc).__name__}: {exc} (SR_SEARCH_DEBUG=1 shows the "
                                      f"traceback)"), err=True)
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not print a BrokenPipeError of its own
    (the Python docs' recipe for SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (a test runner's buffer): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def shown(path: str | os.PathLike[str]) -> str:
    """`path` as the CLI prints it: relative to the working directory when it lies under it (a README or log
    then shows `runs/x`, not the folders of the machine it ran on); otherwise as it is."""
    path = Path(path)
    cwd = Path.cwd()
    for candidate in (path.absolute(), path.resolve()):
        if candidate.is_relative_to(cwd):
            return str(candidate.relative_to(cwd))
    return str(path)


def _relative_text(text: str) -> str:
    """A library message with every absolute path under the working directory made relative (`launch` prints
    through this; e.g. `sqlite:////home/me/runs/x/optuna.db` becomes the equivalent `sqlite:///runs/x/optuna.db`)."""
    cwd = os.getcwd()
    if cwd == os.sep:
        return text
    # a path starts the text, follows a non-path character, or is a SQLite URL's; never the middle of another path
    start = r"(?:(?<=sqlite:///)|(?<![\w.~/-]))"
    return re.sub(start + re.escape(cwd.rstrip(os.sep) + os.sep), "", text)


def _echo(message: str) -> None:
    typer.echo(_relative_text(str(message)))


def _in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` or the first exception of type `kind` among its causes and contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A study's own warnings (a damaged file set aside) as one plain line; others as Python shows them."""
    if issubclass(category, StudyDataWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


BLOCK_MODULE_HELP = "a .py file or module name of block families of your own (repeatable)"


@app.command()
@_guarded
def inspect(
    models: list[str] = typer.Argument(..., help="preset names (see `sr-search presets`) or ArchSpec JSON objects"),
    scale: Optional[int] = typer.Option(None, help="override the scale (x2/x3 variants of the same model)"),
    protocol: str = typer.Option("cpu", help="timing protocol whose input size the MACs are counted at; an engine "
                                             "protocol (ort-cpu, openvino-cpu, ...) also shows the ops it cannot take"),
    block_module: list[str] = typer.Option([], "--block-module", help=BLOCK_MODULE_HELP),
) -> None:
    """Parameters (training and deployed form), MACs of the deployed form and the deploy error."""
    from .run.inspect import inspect_table

    _load_block_modules(block_module)
    specs = {name: _resolve(name, scale) for name in models}
    typer.echo(inspect_table(specs, protocol))


@app.command()
@_guarded
def presets(
    block_module: list[str] = typer.Option([], "--block-module", help=BLOCK_MODULE_HELP),
) -> None:
    """List the paper baselines by name with their deployed parameter counts, then the block families."""
    from .model.blocks import REGISTRY, family_source
    from .model.presets import PRESETS, REFERENCE_PARAMS, REFERENCE_SOURCE

    _load_block_modules(block_module)
    for name, spec in PRESETS.items():
        count = REFERENCE_PARAMS.get(name)
        note = f"  ({REFERENCE_SOURCE[name]}: {count:,})" if count else ""
        typer.echo(f"{name:20s} {spec.block:10s} C={spec.channels:<3d} depth={spec.depth:<3d}{note}")
    typer.echo("\nblock families (fields; * shapes the deployed network):")
    for name, family in sorted(REGISTRY.items()):
        fields = ", ".join(f + ("*" if f in family.deploy_fields else "") for f in family.field_names) or "-"
        also = f", deploys as {family.deploys_as}" if family.deploys_as else ""
        typer.echo(f"  {name:10s} {fields}{also}  [{_relative_text(family_source(name))}]")


@app.command()
@_guarded
def launch(
    study_file: Path = typer.Argument(..., help="study YAML (see studies/)"),
    out: Optional[Path] = typer.Option(None, "--out", help="study directory (default: runs/<study name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted study in its directory"),
    address: Optional[str] = typer.Option(
        None, "--address", help="join an existing Ray cluster (else RAY_ADDRESS, else a local instance)"),
    trials: Optional[int] = typer.Option(None, "--trials", help="override the study's n_trials (search mode)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the plan; start nothing"),
    dashboard_host: str = typer.Option(
        "127.0.0.1", "--dashboard-host",
        help="where the local Ray dashboard listens; loopback unless you ask otherwise"),
    allow_block_change: bool = typer.Option(
        False, "--allow-block-change",
        help="resume although a block module file changed: you say it builds the same networks (noted in the study)"),
) -> None:
    """Run a study: Optuna samples, Ray Tune trains, every candidate is reparameterized, timed and recorded."""
    from .run.tune.launch import launch as run
    from .study.config import load_study

    study = load_study(study_file)
    study_dir = run(study, out_dir=out, resume=resume, address=address, n_trials=trials, dry_run=dry_run,
                    dashboard_host=dashboard_host, study_file=study_file, echo=_echo,
                    allow_block_change=allow_block_change)
    if not dry_run:
        report(study_dir, reference=[])  # called as a function: typer's option defaults are not values


@app.command()
@_guarded
def slurm(
    study_file: Path = typer.Argument(..., help="study YAML (see studies/)"),
    nodes: int = typer.Option(1, "--nodes", help="nodes: Ray's head on the first, workers on the others"),
    gpus_per_node: int = typer.Option(0, "--gpus-per-node", help="GPUs per node (Slurm --gpus-per-node)"),
    cpus_per_node: Optional[int] = typer.Option(
        None, "--cpus-per-node", help="CPUs per node (default: what the study's concurrent trials need, at least 2)"),
    time: str = typer.Option("24:00:00", "--time", help="time limit as Slurm writes it (HH:MM:SS, D-HH:MM:SS)"),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition"),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account"),
    mem: Optional[str] = typer.Option(None, "--mem", help="memory per node, as Slurm writes it (e.g. 64G; 0 = all)"),
    signal_before: int = typer.Option(
        300, "--signal-before", metavar="SECONDS",
        help="warn the driver this long before the time limit: it stops, saves, and the job requeues itself"),
    out: Optional[Path] = typer.Option(None, "--out", help="study directory (default: runs/<study name>)"),
    submit: bool = typer.Option(False, "--submit", help="also submit the script (sbatch)"),
) -> None:
    """Write (and with --submit, submit) one sbatch script that runs the study through Ray on a Slurm allocation,
    stops cleanly before the time limit, requeues itself and resumes until the study is finished."""
    from .run.slurm import SlurmJob, submit as run_sbatch, write_script
    from .study.config import load_study

    study = load_study(study_file)
    job = SlurmJob(nodes=nodes, gpus_per_node=gpus_per_node, cpus_per_node=cpus_per_node, time=time,
                   partition=partition, account=account, mem=mem, signal_before_s=signal_before)
    path = write_script(study, study_file, out, job)
    typer.echo(f"sbatch script: {shown(path)}")
    if submit:
        job_id = run_sbatch(path)
        typer.echo(f"submitted job {job_id}; log: {shown(path.parent / f'slurm-{job_id}.log')}; progress: "
                   f"sr-search status {shown(out if out is not None else study.out_dir)}")
    else:
        typer.echo(f"submit it with: sbatch {shown(path)}")


@app.command()
@_guarded
def confirm(
    study_dir: Path = typer.Argument(..., help="a finished study directory (the source: only read)"),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="the confirmation's training budget"),
    top: Optional[int] = typer.Option(
        None, "--top", help="the K best by non-dominated rank, then crowding distance (default: the front)"),
    include: list[str] = typer.Option([], "--include", help="'baselines': also the study's named baselines"),
    seeds: int = typer.Option(1, "--seeds", help="train each candidate with this many seeds (its own, then the next)"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="the confirmation's directory (default: next to the source, <name>.confirm-N)"),
    continue_: bool = typer.Option(
        False, "--continue", help="start from the source's kept weights; train the rest of the budget"),
    show: bool = typer.Option(False, "--show", help="print the fidelity report of an existing confirmation; run "
                                                    "nothing (STUDY_DIR may be the confirmation itself)"),
    address: Optional[str] = typer.Option(None, "--address", help="join an existing Ray cluster"),
    dashboard_host: str = typer.Option("127.0.0.1", "--dashboard-host", help="where the local Ray dashboard listens"),
) -> None:
    """Train a finished study's front again with a longer budget, as a study of its own (resumable), and report
    how well the short trainings ranked it: Kendall tau and Spearman rho with 95% intervals, front kept/joined."""
    from .results.fidelity import confirmed_source, study_fidelity

    unknown = [i for i in include if i != "baselines"]
    if unknown:
        raise SrSearchError(f"--include {unknown[0]!r}: only 'baselines' can be included")
    if show:
        target = out
        if target is None and confirmed_source(study_dir) is not None:
            target = study_dir
        if target is None:
            if iterations is None:
                raise SrSearchError("--show needs the confirmation: its folder, --out DIR, or the --iterations it ran")
            from .study.confirm import confirmation_name
            from .study.config import load_study

            target = study_dir / ".." / confirmation_name(load_study(study_dir / "study.yaml").name, iterations)
        typer.echo(_relative_text(study_fidelity(target).text()))
        return
    if iterations is None:
        raise SrSearchError("--iterations is required: the budget the candidates are trained with again")
    from .run.confirm import confirm as run

    folder = run(study_dir, iterations, top=top, include_baselines="baselines" in include, seeds=seeds, out_dir=out,
                 warm=continue_, address=address, dashboard_host=dashboard_host, echo=_echo)
    report(folder, reference=[])  # called as a function: typer's option defaults are not values
    typer.echo(_relative_text(study_fidelity(folder).text()))


@app.command()
@_guarded
def validate(
    files: list[Path] = typer.Argument(..., help="search-space or study YAML files"),
    show: bool = typer.Option(False, "--show", help="also print each space's size and a few sampled specs"),
) -> None:
    """Check spaces and studies; every problem is listed (file, key, line, value, allowed values); exit 1 if any."""
    from .run.resources import resource_problems
    from .study.config import describe, validate_files

    problems = validate_files(files)
    problems = [str(p) for p in problems] or resource_problems(files)  # what launch would refuse on this machine
    if problems:
        for problem in problems:
            typer.echo(_relative_text(problem), err=True)
        typer.echo(f"{len(problems)} problem(s) in {len(files)} file(s)", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    for path in files:
        typer.echo(f"{shown(path)}: ok")
        if show:
            typer.echo(_relative_text(describe(path)))


@app.command("time")
@_guarded
def time_models(
    models: list[str] = typer.Argument(..., help="preset names or ArchSpec JSON objects"),
    protocol: Optional[str] = typer.Option(
        None, help="timing protocol: repsr, ntire23-x2/x3, ntire26-esr, ntire25-esr (-warm), cpu, or a deployment "
                   "engine: ort-cpu, openvino-cpu, ort-cuda, trt-fp16 ... "
                   "(default: repsr with a GPU, else cpu)"),
    device: Optional[str] = typer.Option(None, help="torch device, e.g. cuda:0 or cpu (default: the protocol's)"),
    scale: Optional[int] = typer.Option(None, help="override the scale of every model"),
    block_module: list[str] = typer.Option([], "--block-module", help=BLOCK_MODULE_HELP),
) -> None:
    """Time deployed models on this machine with a named protocol; one table for all of them."""
    _load_block_modules(block_module)
    from .run.timing.table import format_table, timing_table
    from .study.protocols import default_protocol

    specs = {name: _resolve(name, scale) for name in models}
    typer.echo(format_table(timing_table(specs, protocol or default_protocol(), device)))


@app.command()
@_guarded
def report(
    study_dir: Path = typer.Argument(..., help="a study directory (runs/<study>)"),
    reference: list[str] = typer.Option(
        [], "--reference", metavar="NAME=VALUE",
        help="pin the hypervolume reference of one objective, NAME=VALUE (repeatable; as in compare)"),
) -> None:
    """Plots, the Pareto front table and a self-contained report.html; prints the study's hypervolume and its
    reference point (the rule and the number `compare` prints for it)."""
    from .results.report import hypervolume_text, write_report
    from .results.store import load_results, study_objectives

    rows, objectives = load_results(study_dir), study_objectives(study_dir)
    pinned = {k: _number(v, k) for k, v in _pairs(reference, "--reference").items()}
    path = write_report(study_dir, rows, study_meta={"objectives": objectives}, reference=pinned)
    line = hypervolume_text(rows, objectives, pinned)
    if line:
        typer.echo(line)
    typer.echo(f"report: {shown(path)}")


@app.command()
@_guarded
def pareto(study_dir: Path = typer.Argument(..., help="a study directory")) -> None:
    """Print the Pareto front of a study as a table."""
    from .results.store import load_results, study_objectives
    from .results.tables import front_text

    typer.echo(front_text(load_results(study_dir), study_objectives(study_dir)))


@app.command()
@_guarded
def effects(
    study_dir: Path = typer.Argument(..., help="an ablation's study directory"),
    csv: bool = typer.Option(False, "--csv", help="print every effect as CSV (one row per factor, level, objective)"),
    resolve: float = typer.Option(0.05, "--resolve", help="effect size (dB) the budget hint asks seeds for"),
) -> None:
    """Each level's effect vs the base, with its 95% interval, verdict and the rule used; a budget hint."""
    from .results.effects import study_effects
    from .results.effects_view import effects_text

    table, hint = study_effects(study_dir, resolve)
    typer.echo(table.to_csv(index=False).rstrip("\n") if csv else effects_text(table, hint))


@app.command()
@_guarded
def export(
    study_dir: Path = typer.Argument(..., help="a study directory"),
    trial: str = typer.Option(..., "--trial", help="trial id, e.g. 7 or 0007"),
    format: str = typer.Option("pt", "--format", help="pt (TorchScript) or onnx"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="output file or existing folder (default: STUDY_DIR/export/ID.FORMAT); the only file "
                            "written"),
) -> None:
    """Write the deployed network of one trial (needs keep_checkpoints: true) and check the export."""
    from .results.export import export as run_export

    path, err = run_export(study_dir, trial, format, out)
    typer.echo(f"exported {shown(path)} (max abs error vs trained model {err:.2e})")


@app.command()
@_guarded
def status(study_dir: Path = typer.Argument(..., help="a study directory, possibly still running"),
           recount: bool = typer.Option(False, "--recount", help="count the rows themselves, not trusting "
                                                                  "progress.json (it is trusted while the number of "
                                                                  "rows on disk matches it)")) -> None:
    """Progress of a study running here or elsewhere (reads its directory)."""
    from .results.progress import status as study_status

    typer.echo(_relative_text(study_status(study_dir, recount=recount)))


@app.command()
@_guarded
def cache(
    action: str = typer.Argument(..., help="info: what the node's prepared-image cache holds; clear: empty it"),
    folder: Optional[Path] = typer.Option(None, "--dir", help="the cache folder (default: data.cache's default, "
                                                              "$SR_SEARCH_DATA_CACHE or ~/.cache/sr-search/data)"),
) -> None:
    """The prepared-image cache of this node (decoded and degraded training and validation images)."""
    from .study.data_cache import DataCache

    if action not in ("info", "clear"):
        raise SrSearchError(f"sr-search cache: action must be 'info' or 'clear'; got {action!r}")
    store = DataCache.from_setting(None if folder is None else str(folder))
    if action == "clear":
        freed = store.clear()
        typer.echo(f"{shown(store.root or '-')}: cleared, {freed / 1e9:.2f} GB freed")
        return
    info = store.info()
    bound = "no size bound" if info.max_bytes is None else f"bound {info.max_bytes / 1e9:g} GB"
    typer.echo(f"{shown(info.root)}: {info.entries} entries, {info.bytes / 1e9:.2f} GB ({bound}); "
               f"{info.decodes} decodes and {info.degrades} degrades recorded; {info.partial} unfinished "
               f"file(s) of killed preparations (removed when their image is prepared again)")


@app.command()
@_guarded
def compare(
    study_dirs: list[Path] = typer.Argument(..., metavar="STUDY_DIR",
                                            help="two or more study directories; the first is the yardstick"),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="DIR",
        help="folder for fronts.png, fronts.csv, studies.csv (and levels.csv for ablations); default: print only"),
    objective: list[str] = typer.Option(
        [], "--objective", metavar="NAME=max|min",
        help="compare on NAME=max|min instead of the studies' own objectives (repeat it for each)"),
    reference: list[str] = typer.Option(
        [], "--reference", metavar="NAME=VALUE",
        help="pin the hypervolume reference of one objective, NAME=VALUE (repeatable)"),
    strict: bool = typer.Option(False, "--strict", help="refuse studies timed or measured differently instead of "
                                "flagging them"),
) -> None:
    """Fronts of several studies on one figure and one table, hypervolume against one shared reference, which
    front points another study dominates, ablation levels side by side."""
    from .results.compare import compare_studies

    cmp = compare_studies(study_dirs, objectives=_pairs(objective, "--objective") or None,
                          reference={k: _number(v, k) for k, v in _pairs(reference, "--reference").items()},
                          strict=strict)
    typer.echo(_relative_text(cmp.text()))
    if out is not None:
        for kind, path in cmp.write(out).items():
            typer.echo(f"{kind}: {shown(path)}")


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SrSearchError(f"{option} {item!r}: write NAME=VALUE, e.g. {option} psnr_y=max")
        pairs[name.strip()] = value.strip()
    return pairs


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SrSearchError(f"--reference {name}={value}: the value must be a number") from None


def _load_block_modules(refs: list[str]) -> None:
    from .model.blocks import load_block_module

    for ref in refs:
        load_block_module(ref)


def _resolve(name: str, scale: Optional[int]):
    from .model.presets import resolve

    return resolve(name, scale)


if __name__ == "__main__":  # `python -m sr_search.cli`, same as the `sr-search` console script
    app()
