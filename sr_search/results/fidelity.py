"""Can the short trainings be trusted? The fidelity of a proxy budget, from a confirmation study and its source.

A confirmation (`confirms:`) trains some of a study's candidates again with a longer budget. Here the two are set
side by side, candidate by candidate (the confirmation's rows carry the `source_trial_id` they confirm):

- proxy vs confirmed value of the quality objective (PSNR-Y unless the study optimises another), per candidate
  (mean over its seeds) and per seed;
- Kendall tau and Spearman rho between the two rankings (scipy.stats), each with a percentile bootstrap 95%
  interval over candidates (resampled with replacement; tau-b and rho with ties, vectorised in numpy);
- which proxy front members stay on the confirmed front, which leave it and which candidates join it (fronts over
  the study's objectives among the confirmed candidates; cost objectives are the same deployed networks, timed once);
- the largest rank changes, and one sentence of verdict with its numbers.

The source study folder is only read, never written (`read_rows` reads row files as they are, even a damaged one is
reported rather than moved aside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from ..columns import is_quality
from ..errors import SrSearchError
from ..study.yamlfile import load_bounded
from . import parts
from .pareto import eligible_mask, front_mask
from .store import study_objectives, typed
from .study_dir import StudyDir, atomic_write

__all__ = ["Fidelity", "rank_fidelity", "bootstrap_intervals", "batch_kendall_tau", "batch_spearman_rho",
           "proxy_fidelity", "study_fidelity", "read_rows", "confirmed_source", "fidelity_section"]

#: bootstrap resamples for the intervals (the percentile interval's end points settle to +-0.01 by then)
N_BOOT = 2000
LEVEL = 0.95


# --- rank statistics ------------------------------------------------------------------------------------


def batch_kendall_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of `x`, `y` (..., n): ties count as scipy counts them; NaN where one side is
    constant. The same value as `scipy.stats.kendalltau` (tested), for many samples at once."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    num = (sx * sy).sum(axis=(-1, -2))
    den = np.sqrt(np.abs(sx).sum(axis=(-1, -2)) * np.abs(sy).sum(axis=(-1, -2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def batch_spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson on average ranks) of each row pair of `x`, `y` (..., n); NaN where one is constant."""
    rx = stats.rankdata(x, axis=-1)
    ry = stats.rankdata(y, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=-1) / np.where(den > 0, den, 1), np.nan)


def bootstrap_intervals(x: np.ndarray, y: np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of tau and rho: candidates resampled with replacement `n_boot` times (one
    vectorised pass). (nan, nan) with fewer than 4 candidates, where an interval says nothing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 4:
        return {"tau": (math.nan, math.nan), "rho": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    xb, yb = x[idx], y[idx]
    tail = 100 * (1 - level) / 2
    out = {}
    for name, values in (("tau", batch_kendall_tau(xb, yb)), ("rho", batch_spearman_rho(xb, yb))):
        lo, hi = np.nanpercentile(values, [tail, 100 - tail])
        out[name] = (float(lo), float(hi))
    return out


def rank_fidelity(proxy: Any, confirmed: Any, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Kendall tau and Spearman rho between two measurements of the same candidates, with bootstrap intervals."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(confirmed, dtype=float)
    if len(x) != len(y):
        raise SrSearchError(f"proxy and confirmed values differ in length ({len(x)} vs {len(y)})")
    tau = rho = math.nan
    if len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        tau = float(stats.kendalltau(x, y).statistic)
        rho = float(stats.spearmanr(x, y).statistic)
    ci = bootstrap_intervals(x, y, n_boot=n_boot, seed=seed)
    return {"n": len(x), "tau": tau, "tau_ci": ci["tau"], "rho": rho, "rho_ci": ci["rho"]}


# --- a confirmation and its source ---------------------------------------------------------------------------


@dataclass
class Fidelity:
    """The proxy's fidelity: `pairs` (one row per candidate), `per_seed` (one row per confirmed training), the rank
    statistics and the fronts. `text()` is what `sr-search confirm --show` prints."""

    metric: str
    direction: str
    objectives: dict[str, str]
    proxy_iterations: int | None
    confirmed_iterations: int | None
    pairs: pd.DataFrame
    per_seed: pd.DataFrame
    stats: dict[str, Any]
    kept: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def proxy_front(self) -> list[str]:
        return [*self.kept, *self.left]

    def largest_changes(self, k: int = 5) -> pd.DataFrame:
        """The `k` candidates whose rank moved most (ties: the better confirmed rank first)."""
        moved = self.pairs[self.pairs["rank_change"].fillna(0) != 0].copy()
        moved["_size"] = moved["rank_change"].abs()
        return moved.sort_values(["_size", "confirmed_rank"], ascending=[False, True]).drop(columns="_size").head(k)

    def verdict(self) -> str:
        """One sentence with its numbers: how well the proxy ranks, and what happened to its front."""
        s = self.stats
        n = s["n"]
        proxy = f"{self.proxy_iterations:,}-iteration" if self.proxy_iterations else "short"
        longer = f"{self.confirmed_iterations:,} iterations" if self.confirmed_iterations else "the longer budget"
        seeds = self.per_seed.groupby("source_trial_id")["seed"].nunique()
        seed_text = f"{int(seeds.max())} seeds each" if len(seeds) and seeds.max() > 1 else "1 seed each"
        front = (f"{len(self.kept)} of {len(self.proxy_front)} proxy front members stay on the confirmed front"
                 + (f" and {len(self.joined)} join it" if self.joined else ""))
        if n < 2 or math.isnan(s["tau"]):
            return (f"Too few confirmed candidates to rank ({n}): the {proxy} proxy cannot be judged against "
                    f"{longer}; {front}.")
        lo, hi = s["tau_ci"]
        interval = f" [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else " (too few candidates for an interval)"
        if not math.isnan(lo) and lo >= 0.6:
            judged = "The short trainings can be trusted to rank these candidates"
        elif s["tau"] >= 0.4:
            judged = "The short trainings rank these candidates only roughly"
        else:
            judged = "The short trainings do not rank these candidates reliably"
        return (f"{judged}: the {proxy} proxy ranks these {n} candidates with Kendall tau {s['tau']:.2f}{interval} "
                f"(Spearman rho {s['rho']:.2f}) against {longer} ({seed_text}); {front}.")

    def text(self) -> str:
        """The fidelity report as plain text: verdict, statistics, fronts, rank changes, every candidate."""
        s = self.stats
        lines = [self.verdict(), ""]
        if self.source:
            lines.append(f"source: {self.source}")
        lines.append(f"{self.metric} ({self.direction}), proxy {self.proxy_iterations or '?'} vs confirmed "
                     f"{self.confirmed_iterations or '?'} iterations, {s['n']} candidates")
        for name in ("tau", "rho"):
            lo, hi = s[f"{name}_ci"]
            label = "Kendall tau " if name == "tau" else "Spearman rho"
            value = "n/a" if math.isnan(s[name]) else f"{s[name]:.3f}"
            ci = "" if math.isnan(lo) else f"  95% bootstrap interval [{lo:.3f}, {hi:.3f}]"
            lines.append(f"  {label}  {value}{ci}")
        lines.append(f"front: kept {_ids(self.kept)}; left {_ids(self.left)}; joined {_ids(self.joined)}")
        if self.missing:
            lines.append(f"not confirmed (no complete training): {_ids(self.missing)}")
        changes = self.largest_changes()
        if len(changes):
            lines.append("largest rank changes (1 = best):")
            lines += [f"  {r.source_trial_id} {r.label}: {int(r.proxy_rank)} -> {int(r.confirmed_rank)}"
                      for r in changes.itertuples()]
        lines += ["", _frame_text(self.pairs[[c for c in _PAIR_COLUMNS if c in self.pairs.columns]])]
        return "\n".join(lines)


_PAIR_COLUMNS = ("source_trial_id", "label", "proxy", "confirmed", "confirmed_sd", "seeds", "proxy_rank",
                 "confirmed_rank", "rank_change", "proxy_front", "confirmed_front")


def proxy_fidelity(source_rows: pd.DataFrame, confirmed_rows: pd.DataFrame, objectives: Mapping[str, str], *,
                   metric: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> Fidelity:
    """Set a confirmation's rows against its source's, candidate by candidate (`source_trial_id`)."""
    objectives = dict(objectives)
    metric = metric or next((m for m in objectives if is_quality(m)), "psnr_y")
    direction = objectives.get(metric, "max")
    if "source_trial_id" not in confirmed_rows.columns:
        raise SrSearchError("the confirmation's rows have no source_trial_id: it is not a confirmation study")
    needed = list(dict.fromkeys([*objectives, metric]))
    conf = confirmed_rows[eligible_mask(confirmed_rows, dict.fromkeys(needed, "max"))]
    asked = [str(t) for t in dict.fromkeys(confirmed_rows["source_trial_id"].dropna())]
    source = source_rows.set_index(source_rows["trial_id"].astype(str))
    per_seed = pd.DataFrame({
        "source_trial_id": conf["source_trial_id"].astype(str).to_numpy(), "trial_id": conf["trial_id"].to_numpy(),
        "seed": conf["seed"].to_numpy(), "confirmed": conf[metric].astype(float).to_numpy(),
    })
    per_seed["proxy"] = [float(source.at[t, metric]) if t in source.index else math.nan
                         for t in per_seed["source_trial_id"]]
    per_seed = per_seed[["source_trial_id", "trial_id", "seed", "proxy", "confirmed"]]
    grouped = conf.assign(source_trial_id=conf["source_trial_id"].astype(str)).groupby("source_trial_id", sort=False)
    means = grouped[needed].mean()
    ids = [t for t in asked if t in means.index and t in source.index]
    missing = [t for t in asked if t not in ids]
    pairs = pd.DataFrame({"source_trial_id": ids})
    pairs["label"] = [_label(source.loc[t]) for t in ids]
    pairs["baseline"] = [_baseline(source.loc[t]) for t in ids]
    pairs["proxy"] = [float(source.at[t, metric]) for t in ids]
    pairs["confirmed"] = [float(means.at[t, metric]) for t in ids]
    pairs["confirmed_sd"] = [float(grouped.get_group(t)[metric].std()) if len(grouped.get_group(t)) > 1 else math.nan
                             for t in ids]
    pairs["seeds"] = [len(grouped.get_group(t)) for t in ids]
    ascending = direction == "min"
    pairs["proxy_rank"] = pairs["proxy"].rank(ascending=ascending, method="min").astype("Int64")
    pairs["confirmed_rank"] = pairs["confirmed"].rank(ascending=ascending, method="min").astype("Int64")
    pairs["rank_change"] = pairs["proxy_rank"] - pairs["confirmed_rank"]  # > 0: it moved up
    signs = np.array([1.0 if objectives[m] == "min" else -1.0 for m in objectives])
    proxy_points = np.array([[float(source.at[t, m]) for m in objectives] for t in ids]).reshape(len(ids), -1)
    confirmed_points = np.array([[float(means.at[t, m]) for m in objectives] for t in ids]).reshape(len(ids), -1)
    pairs["proxy_front"] = front_mask(proxy_points * signs) if len(ids) else []
    pairs["confirmed_front"] = front_mask(confirmed_points * signs) if len(ids) else []
    for m in objectives:
        if m != metric:
            pairs[f"proxy_{m}"] = proxy_points[:, list(objectives).index(m)] if len(ids) else []
            pairs[f"confirmed_{m}"] = confirmed_points[:, list(objectives).index(m)] if len(ids) else []
    on_proxy, on_confirmed = pairs["proxy_front"].astype(bool), pairs["confirmed_front"].astype(bool)
    result = rank_fidelity(pairs["proxy"], pairs["confirmed"], n_boot=n_boot, seed=seed)
    return Fidelity(
        metric=metric, direction=direction, objectives=objectives,
        proxy_iterations=_iterations(source_rows[source_rows["trial_id"].astype(str).isin(ids)]),
        confirmed_iterations=_iterations(conf, total=True), pairs=pairs, per_seed=per_seed, stats=result,
        kept=list(pairs.loc[on_proxy & on_confirmed, "source_trial_id"]),
        left=list(pairs.loc[on_proxy & ~on_confirmed, "source_trial_id"]),
        joined=list(pairs.loc[~on_proxy & on_confirmed, "source_trial_id"]), missing=missing,
    )


def confirmed_source(study_dir: str | Path | StudyDir) -> Path | None:
    """The source folder a study folder confirms (its frozen `confirms:`), or None for an ordinary study."""
    frozen = StudyDir(study_dir).study_file
    if not frozen.exists():
        return None
    try:
        data = load_bounded(frozen.read_text(), frozen) or {}
    except SrSearchError:
        return None
    value = data.get("confirms") if isinstance(data, dict) else None
    return Path(value) if isinstance(value, str) and value else None


def study_fidelity(confirmation_dir: str | Path | StudyDir, *, n_boot: int = N_BOOT) -> Fidelity:
    """The fidelity report of a confirmation folder against the source it names (both only read)."""
    folder = StudyDir(confirmation_dir).require()
    source_dir = confirmed_source(folder)
    if source_dir is None:
        raise SrSearchError(f"{folder.root} is not a confirmation study (its study.yaml has no `confirms:`)")
    if not StudyDir(source_dir).exists():
        raise SrSearchError(f"{folder.root} confirms {source_dir}, which is gone: the proxy values live there")
    out = proxy_fidelity(read_rows(source_dir), read_rows(folder), study_objectives(folder), n_boot=n_boot)
    out.source = str(source_dir)
    return out


def read_rows(study_dir: str | Path | StudyDir) -> pd.DataFrame:
    """Every row of a study folder, read without writing anything: the compacted parts its manifest names, then the
    loose row files (a trial in both keeps the later write, as `load_results` does). A damaged file is an error
    naming it, never moved aside: this reads folders it does not own, such as a confirmation's source."""
    where = StudyDir(study_dir).require()
    manifest = parts.read_manifest(where)
    files = [f for f in (parts.parts_dir(where) / p["file"] for p in manifest.parts) if f.exists()]
    files += parts.loose_files(where)
    if not files and where.results.exists():
        files = [where.results]
    tables = []
    for order, path in enumerate(files):
        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            raise SrSearchError(f"{path} is unreadable ({type(exc).__name__}: {exc}); `sr-search report "
                                f"{where.root}` sets it aside, then run again") from None
        tables.append(table.append_column("_order", pa.array([order] * table.num_rows, pa.int64())))
    if not tables:
        return pd.DataFrame({"trial_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    df = pa.concat_tables(tables, promote_options="default").to_pandas()
    df = df.sort_values("_order", kind="stable").drop_duplicates("trial_id", keep="last")
    return typed(df.drop(columns="_order").sort_values("trial_id", kind="stable").reset_index(drop=True))


def fidelity_section(study_dir: Path, out: Path) -> str:
    """The report's fidelity section when `study_dir` confirms another study ('' otherwise): the verdict, the
    statistics and the arrows figure (written to `out/fidelity.png`, embedded in the page)."""
    import base64
    import html

    (out / "fidelity.png").unlink(missing_ok=True)
    if confirmed_source(study_dir) is None:
        return ""
    try:
        fid = study_fidelity(study_dir)
    except SrSearchError as exc:
        return f"<section><h2>Proxy fidelity</h2><p>{html.escape(str(exc))}</p></section>"
    from .fidelity_figure import plot_fidelity, png_bytes

    fig = plot_fidelity(fid)
    figure = ""
    if fig is not None:
        png = png_bytes(fig)
        atomic_write(out / "fidelity.png", lambda tmp: tmp.write_bytes(png))
        figure = (f"<figure><img alt=\"proxy vs confirmed\" src=\"data:image/png;base64,"
                  f"{base64.b64encode(png).decode('ascii')}\"><figcaption>Each candidate's move from its proxy "
                  f"value (hollow) to its confirmed value (filled) (fidelity.png)</figcaption></figure>")
    pairs = fid.pairs[[c for c in _PAIR_COLUMNS if c in fid.pairs.columns]]
    return (f"<section id=\"fidelity\"><h2>Proxy fidelity</h2><p><b>{html.escape(fid.verdict())}</b></p>"
            f"<pre>{html.escape(fid.text().split(chr(10) + chr(10), 1)[1])}</pre>{figure}"
            f"<p class=\"small\">{len(fid.per_seed)} confirmed trainings; per seed: "
            f"{html.escape(_per_seed_text(fid))}</p>{pairs.to_html(index=False, na_rep='')}</section>")


# --- helpers ---------------------------------------------------------------------------------------


def _iterations(rows: pd.DataFrame, total: bool = False) -> int | None:
    """The budget the rows trained with (the most common; a continued training counts its proxy iterations)."""
    if "train_iterations" not in rows.columns or not rows["train_iterations"].notna().any():
        return None
    values = rows["train_iterations"].astype(float)
    if total and "continued_from_iterations" in rows.columns:
        values = values + rows["continued_from_iterations"].astype(float).fillna(0)
    return int(values.mode().iloc[0])


def _baseline(row: pd.Series) -> str | None:
    baseline = row.get("baseline")
    return baseline if isinstance(baseline, str) and baseline else None


def _label(row: pd.Series) -> str:
    if _baseline(row):
        return str(_baseline(row))
    parts = [str(row.get("block", "?"))]
    for name, key in (("C", "channels"), ("depth ", "depth")):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{name}{int(value)}")
    return " ".join(parts)


def _ids(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _per_seed_text(fid: Fidelity) -> str:
    return "; ".join(f"{r.source_trial_id} seed {int(r.seed)}: {r.proxy:.3f} -> {r.confirmed:.3f}"
                     for r in fid.per_seed.itertuples())


def _frame_text(df: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
        return df.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
