"""How ablation effects read: one display table (report and terminal), the rules behind the verdicts, the budget
hint and the noise band the figure shades. Only formatting; the numbers come from `effects`."""

from __future__ import annotations

import math

import pandas as pd

from .contrasts import NOISE_FLOOR, PAIRED, noise_threshold
from .tables import LABELS, UNITS, _number

__all__ = ["effects_display", "effects_text", "hint_text", "noise_band", "rules_text"]

SAME = "same deployed network"


def effects_display(effects: pd.DataFrame) -> pd.DataFrame:
    """One row per factor level, text cells: factor, level ('(base)' marked), seeds, then per objective its change
    vs the base with the 95% interval and the verdict. An objective on which every level deploys to the base's
    network gets no columns (`rules_text` says so once)."""
    if effects.empty:
        return pd.DataFrame(columns=["factor", "level", "seeds"])
    shown = [o for o in dict.fromkeys(effects["objective"]) if not _all_same(effects, o)]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in effects.itertuples(index=False):
        row = rows.setdefault((r.factor, r.level_text), {
            "factor": r.factor, "level": f"{r.level_text} (base)" if r.is_base else r.level_text,
            "seeds": _seeds(r)})
        if r.objective in shown:
            row[f"Δ {_label(r.objective)}"] = _change(r)
            row[f"{_short(r.objective)} verdict"] = "" if r.is_base else r.verdict
    return pd.DataFrame(list(rows.values()))


def effects_text(effects: pd.DataFrame, hint: pd.DataFrame | None = None) -> str:
    """What `sr-search effects DIR` prints: the table, the rules used and the budget hint."""
    if effects.empty:
        return "No ablation effects: the results hold no ablation trials (mode: ablation)."
    lines = [effects_display(effects).to_string(index=False), ""]
    lines += [f"- {line}" for line in rules_text(effects)]
    if hint is not None and not hint.empty:
        lines += ["", hint_text(hint, effects)]
    return "\n".join(lines)


def rules_text(effects: pd.DataFrame) -> list[str]:
    """One sentence per objective and rule used: which rule decided the verdicts, with its numbers."""
    out = []
    for objective in dict.fromkeys(effects["objective"]):
        rows = effects[(effects["objective"] == objective) & ~effects["is_base"].astype(bool)]
        label, unit = _short(objective), UNITS.get(objective, "")
        if _all_same(effects, objective):
            out.append(f"{label}: every level deploys to the base's network (same deploy_key), so it cannot differ.")
            continue
        for method, group in rows.groupby("method", sort=False):
            n = len(group)
            if method == PAIRED:
                seeds = _span(group["n_seeds"])
                out.append(f"{label}, {n} effect(s): paired over {seeds} seeds (variant minus base at the same seed); "
                           f"better/worse when the 95% Student-t interval excludes 0.")
            elif method == NOISE_FLOOR:
                first = group.iloc[0]
                k, sd = int(first["base_seeds"]), float(first["noise_floor"])
                out.append(f"{label}, {n} effect(s) with {_span(group['n_seeds'])} seed(s): against the noise floor, "
                           f"the base's seed-to-seed s.d. {sd:.3g} {unit} over {k} seeds; a single-seed effect counts "
                           f"when |Δ| > {noise_threshold(sd, k):.3g} {unit} (95% t, {k - 1} d.f.).".replace("  ", " "))
            elif method == "no noise estimate":
                out.append(f"{label}, {n} effect(s): no noise estimate (one seed each and one base seed), so no "
                           f"verdict; add `base_seeds: 3` (or more seeds) to the study.")
            elif method == "no data":
                out.append(f"{label}, {n} level(s): no complete trial to compare (see the failures).")
            elif method == SAME:
                out.append(f"{label}, {n} level(s): deploy to the base's network, so no difference by construction.")
            else:
                out.append(f"{label}, {n} effect(s): {group.iloc[0]['rule']}.")
    return out


def hint_text(hint: pd.DataFrame, effects: pd.DataFrame) -> str:
    """The budget hint: how many of the effects are resolved, and seeds per variant that would resolve each size."""
    objective = str(hint.iloc[0]["objective"])
    label, unit = _short(objective), UNITS.get(objective, "")
    rows = effects[(effects["objective"] == objective) & ~effects["is_base"].astype(bool)]
    unresolved = int(rows["verdict"].isin(["not distinguishable", "unknown"]).sum())
    sizes = "; ".join(f"{_number(r.resolve)} {unit}: {r.seeds if r.seeds else 'more than 1000'} seeds per variant"
                      for r in hint.itertuples(index=False))
    return (f"{unresolved} of {len(rows)} {label} effects are not distinguishable from noise. Budget hint: one seed's "
            f"difference vs the base varies by {hint.iloc[0]['diff_sd']:.3g} {unit} (s.d., from "
            f"{hint.iloc[0]['source']}); to resolve an effect of {sizes} (seeds: [0, 1, ...], each paired with "
            f"the base).").replace("  ", " ")


def noise_band(effects: pd.DataFrame, objective: str) -> float:
    """Half the width of the band a single run differs from the base within by noise alone (95%), from the base's
    spread; NaN without two base seeds."""
    rows = effects[effects["objective"] == objective]
    if rows.empty:
        return math.nan
    return noise_threshold(float(rows.iloc[0]["noise_floor"]), int(rows.iloc[0]["base_seeds"]))


# --- helpers ---------------------------------------------------------------------------------------------------


def _all_same(effects: pd.DataFrame, objective: str) -> bool:
    rows = effects[(effects["objective"] == objective) & ~effects["is_base"].astype(bool)]
    return len(rows) > 0 and bool((rows["verdict"] == SAME).all())


def _change(r) -> str:
    if r.is_base:
        return f"0 (= {_value(r.base_value)})"
    if r.verdict == SAME:
        return SAME
    if not math.isfinite(r.effect):
        return "–"
    text = _signed(r.effect)
    if math.isfinite(r.ci_low) and math.isfinite(r.ci_high) and r.ci_low != r.ci_high:
        text += f" [{_signed(r.ci_low)}, {_signed(r.ci_high)}]"
    return text


def _seeds(r) -> str:
    if r.is_base or r.n_seeds == r.base_seeds:
        return f"{int(r.n_seeds)}"
    return f"{int(r.n_seeds)} (base {int(r.base_seeds)})"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if abs(value) < 100 else f"{value:+,.0f}"


def _value(value: float) -> str:
    return "–" if not math.isfinite(value) else (f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}")


def _label(objective: str) -> str:
    return LABELS.get(objective, objective)


def _short(objective: str) -> str:
    return LABELS.get(objective, objective).split(" (")[0]


def _span(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"
