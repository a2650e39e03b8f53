"""Report section for results/control.csv and control_curves.csv: control races.

Per (task, method) the median over seeds of environment steps, seconds and (ES) loss
evaluations to the task's return threshold, with a percentile-bootstrap 95% interval
(:func:`fold_jax.report._common.bootstrap_median`; a miss is +inf and stays in the
resamples), and the final return on the held-out evaluation episodes. One figure per
task: held-out return against environment steps (left) and training seconds (right),
every method on log x axes (the median over seeds at each evaluation, the seeds' range
shaded; a race stops at the threshold, so a solved seed's last return holds after it).

:func:`headline` states the goals of ``fold_jax/bench/goals.toml``, from rows only:
``[[control_goal]]`` (issue 33: on every task, fold_jax's best ES, by fewest median env
steps to the threshold, needs at most the env steps of evosax's best strategy;
overlapping intervals are a tie and said so; PPO reported beside them) and
``[[control_speed_goal]]`` (at d >= ``min_params``, fold_jax's fastest generation takes
at most ``seconds_ratio`` x the seconds of evosax's at the same population, both timed in
the same alternating rounds, ``control_speed.csv``; the ratio at smaller d is shown, not
judged). Methods a task could not race (``not_run`` rows) are listed with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_median, fmt, interval_text, save, table

__all__ = ["ControlGoal", "SpeedGoal", "best", "goals", "headline", "not_run", "section",
           "speed_goals", "speed_lines", "summary"]

STATS = {"env steps": "env_steps_to_target", "time (s)": "time_to_target_s",
         "evals": "evals_to_target", "final return": "final_return"}


class ControlGoal(NamedTuple):
    """One ``[[control_goal]]`` of ``fold_jax/bench/goals.toml``: library ``ours``'s best
    needs at most the median env steps of ``peer``'s best; ``beside`` is shown, not
    judged."""

    ours: str
    peer: str
    beside: str = ""
    why: str = ""


def goals() -> list[ControlGoal]:
    """The ``[[control_goal]]`` entries of the shipped ``fold_jax/bench/goals.toml``.

    Returns:
        The goals, in file order.

    Raises:
        ValueError: an entry without ``ours`` / ``peer`` library names.
    """
    out = []
    for i, g in enumerate(_goals_toml().get("control_goal", [])):
        if not all(isinstance(g.get(k), str) for k in ("ours", "peer")):
            raise ValueError(f"fold_jax/bench/goals.toml: control_goal {i} lacks ours / peer")
        out.append(ControlGoal(g["ours"], g["peer"], g.get("beside", ""), g.get("why", "")))
    return out


class SpeedGoal(NamedTuple):
    """One ``[[control_speed_goal]]`` of ``fold_jax/bench/goals.toml``: at ``n_params >=
    min_params``, library ``ours``'s fastest generation takes at most ``seconds_ratio``
    x the seconds of library ``peer``'s (the rows' baseline)."""

    ours: str
    peer: str
    min_params: float
    seconds_ratio: float
    why: str = ""


def _goals_toml() -> dict:
    import tomllib
    from importlib import resources

    return tomllib.loads(resources.files("fold_jax.bench").joinpath("goals.toml").read_text())


def speed_goals() -> list[SpeedGoal]:
    """The ``[[control_speed_goal]]`` entries of the shipped ``goals.toml``.

    Returns:
        The goals, in file order.

    Raises:
        ValueError: an entry without ``ours`` / ``peer`` names or numeric thresholds.
    """
    out = []
    for i, g in enumerate(_goals_toml().get("control_speed_goal", [])):
        if not (all(isinstance(g.get(k), str) for k in ("ours", "peer"))
                and all(isinstance(g.get(k), int | float) for k in ("min_params",
                                                                    "seconds_ratio"))):
            raise ValueError(f"fold_jax/bench/goals.toml: control_speed_goal {i} needs ours, "
                             f"peer (library names), min_params and seconds_ratio (numbers)")
        out.append(SpeedGoal(g["ours"], g["peer"], float(g["min_params"]),
                             float(g["seconds_ratio"]), g.get("why", "")))
    return out


def speed_lines(speed: pd.DataFrame | None) -> list[str]:
    """The speed goals' verdicts from ``control_speed`` rows, and every configuration's
    ratios (d ~ 1e3 included, shown not judged).

    Args:
        speed: control_speed.csv rows (None or empty: no lines).

    Returns:
        Markdown lines.
    """
    if speed is None or speed.empty:
        return []
    lines = []
    configs = ["task", "n_params", "population", "episode_length", "num_episodes"]
    for goal in speed_goals():
        lines.append(f"Goal ({goal.why}): at d >= {goal.min_params:,.0f}, {goal.ours}'s "
                     f"fastest generation takes <= {goal.seconds_ratio:g} x the seconds of "
                     f"{goal.peer}'s at the same population (same alternating rounds).\n")
        for cfg, g in speed.groupby(configs):
            ours, peer = g[g["library"] == goal.ours], g[g["library"] == goal.peer]
            if ours.empty or peer.empty:
                continue
            fast = ours.sort_values("gen_median_s").iloc[0]
            ratio = float(fast["gen_median_s"] / peer["gen_median_s"].min())
            judged = float(cfg[1]) >= goal.min_params
            verdict = ("met" if ratio <= goal.seconds_ratio else "missed") if judged \
                else "shown, not judged"
            lines.append(
                f"- {cfg[0]}, d = {int(cfg[1]):,}, population {int(cfg[2])}, "
                f"{int(cfg[4])} x {int(cfg[3])}-step episodes: {verdict}: {fast['method']} "
                f"{fmt(fast['gen_median_s'])} s ({fmt(fast['mem_bytes'] / 2**20)} MiB) vs "
                f"{peer['method'].iloc[0]} {fmt(peer['gen_median_s'].min())} s "
                f"({fmt(peer['mem_bytes'].iloc[0] / 2**20)} MiB): ratio {ratio:.2f}")
    return lines


def not_run(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of methods a task could not race.

    Args:
        frame: control.csv rows.

    Returns:
        Those with a non-empty ``not_run`` reason (none without the column).
    """
    if "not_run" not in frame:
        return frame.iloc[:0]
    reason = frame["not_run"].fillna("").astype(str)
    return frame[reason != ""]


def _raced(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(not_run(frame).index)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-method statistics of the control rows.

    Args:
        frame: control.csv rows.

    Returns:
        One row per (task, library, method): seeds, reached, and each of ``STATS``'s
        median with its interval (columns ``<stat>``, ``<stat> lo``, ``<stat> hi``,
        ``<stat> n``).
    """
    rows = []
    for (task, library, method), g in frame.groupby(["task", "library", "method"]):
        row: dict = {"task": task, "library": library, "method": method, "seeds": len(g),
                     "reached": f"{int(g['reached'].astype(bool).sum())}/{len(g)}"}
        for name, column in STATS.items():
            values = g[column].astype(float) if column in g else pd.Series(dtype=float)
            median, lo, hi, n = bootstrap_median(values)
            row |= {name: median, f"{name} lo": lo, f"{name} hi": hi, f"{name} n": n}
        rows.append(row)
    return pd.DataFrame(rows)


def best(stats: pd.DataFrame, task: str, library: str) -> pd.Series | None:
    """The ``library``'s best method on ``task``.

    Args:
        stats: :func:`summary`'s frame.
        task: the task.
        library: the library.

    Returns:
        Its row with the fewest median env steps to the threshold (ties: fewer
        seconds), or None when the library raced none there.
    """
    g = stats[(stats["task"] == task) & (stats["library"] == library)]
    if g.empty:
        return None
    return g.sort_values(["env steps", "time (s)", "method"]).iloc[0]


def _verdict(ours: pd.Series, peer: pd.Series) -> str:
    a, b = ours["env steps"], peer["env steps"]
    if math.isinf(a) and math.isinf(b):
        return "neither reached the threshold (median): not decided"
    overlap = not (ours["env steps hi"] < peer["env steps lo"]
                   or peer["env steps hi"] < ours["env steps lo"])
    if any(math.isnan(x) for x in (ours["env steps lo"], peer["env steps lo"])):
        overlap = False  # one seed: no interval to overlap
    met = a <= b
    if overlap:
        return f"{'met' if met else 'missed'}, but the intervals overlap: a tie"
    return "met" if met else "missed"


def _show(s: pd.Series) -> str:
    return (f"{s['method']} {fmt(s['env steps'])} env steps "
            f"{interval_text(s['env steps lo'], s['env steps hi'], s['env steps n'])}"
            f" ({s['reached']} reached)")


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The goal's status per task, from the control rows: fold_jax's best ES against
    evosax's best in median env steps to the threshold, PPO beside them.

    Args:
        frames: file stem -> DataFrame (``control`` is used).
        fig_dir: unused (the headline draws nothing); kept for the sections' signature.

    Returns:
        Markdown lines, "" without control rows.
    """
    frame = frames.get("control")
    speed = speed_lines(frames.get("control_speed"))
    if frame is None or frame.empty:
        return "\n".join(speed) + "\n" if speed else ""
    frame = _raced(frame)
    stats = summary(frame)
    lines = []
    for goal in goals():
        lines.append(f"Goal ({goal.why}): {goal.ours}'s best reaches each task's threshold in "
                     f"at most the environment steps of {goal.peer}'s best (median over seeds, "
                     f"95% bootstrap intervals; overlapping intervals = tie).\n")
        for task in sorted(stats["task"].unique()):
            ours, peer = best(stats, task, goal.ours), best(stats, task, goal.peer)
            if ours is None or peer is None:
                absent = goal.ours if ours is None else goal.peer
                lines.append(f"- {task}: not decided ({absent} did not race)")
                continue
            text = f"- {task}: {_verdict(ours, peer)}: {_show(ours)} vs {_show(peer)}"
            beside = best(stats, task, goal.beside) if goal.beside else None
            if beside is not None:
                text += f"; beside: {_show(beside)}"
            lines.append(text)
    return "\n".join(lines + speed) + "\n"


def _figure(frame: pd.DataFrame, curves: pd.DataFrame, task: str, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    c = curves[curves["task"] == task]
    threshold = float(frame[frame["task"] == task]["threshold"].iloc[0])
    for method, g in c.groupby("method"):
        for ax, x in zip(axes, ("env_steps", "elapsed_s"), strict=True):
            # each seed's curve as a step function on the union of its x values; a race
            # stops at the threshold, so its last return (solved) holds after it ends
            grid = np.unique(g[x].to_numpy(float))
            grid = grid[grid > 0]  # log axis: step 0 is the same start for everyone
            ys = []
            for _, s in g.groupby("seed"):
                s = s.sort_values(x)
                idx = np.searchsorted(s[x].to_numpy(float), grid, side="right") - 1
                ys.append(s["return"].to_numpy(float)[np.clip(idx, 0, None)])
            ys = np.vstack(ys)
            line, = ax.plot(grid, np.median(ys, axis=0), label=method, lw=1.6)
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(),
                            alpha=0.15)
    for ax, label in zip(axes, ("environment steps", "training seconds"), strict=True):
        ax.axhline(threshold, color="k", ls="--", lw=0.8)
        ax.set_xlabel(f"{label} (log scale)")
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("held-out mean return")
    axes[0].set_title(f"{task}: return vs env steps")
    axes[1].set_title(f"{task}: return vs seconds")
    axes[1].legend(fontsize=7)
    return save(fig, fig_dir, f"control_{task}", f"{task}: return vs env steps and seconds")


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the control races: the headline, a table per task, a figure per task.

    Args:
        frames: file stem -> DataFrame (``control``, ``control_curves``).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown; "" without control rows.
    """
    frame = frames.get("control")
    if frame is None or frame.empty:
        return ""
    curves = frames.get("control_curves")
    skipped = not_run(frame)
    frame = _raced(frame)
    stats = summary(frame)
    out = [headline(frames, fig_dir),
           "Environment steps: an ES evaluation steps every episode to the horizon (both "
           "ES libraries alike); PPO counts its transitions, so the comparison with PPO is "
           "conservative for ES where episodes end early. A miss is inf.\n"]
    for task in sorted(stats["task"].unique()):
        t = stats[stats["task"] == task].sort_values("env steps")
        shown = pd.DataFrame({
            "library": t["library"], "method": t["method"], "seeds": t["seeds"],
            "reached": t["reached"],
            **{name: [f"{fmt(m)} {interval_text(lo, hi, n)}" if n else "-" for m, lo, hi, n in zip(
                t[name], t[f"{name} lo"], t[f"{name} hi"], t[f"{name} n"], strict=True)]
               for name in STATS}})
        out.append(f"### {task}\n\n" + table(shown))
        if curves is not None and not curves.empty and (curves["task"] == task).any():
            out.append(_figure(frame, curves, task, fig_dir))
    if not skipped.empty:
        out.append("Not raced (the reason, from the rows):\n\n" + "\n".join(
            f"- {r.task} / {r.method}: {r.not_run}"
            for r in skipped.drop_duplicates(["task", "method"]).itertuples()) + "\n")
    speed = frames.get("control_speed")
    if speed is not None and not speed.empty:
        shown = speed[["task", "n_params", "population", "episode_length", "num_episodes",
                       "method", "gen_median_s", "gen_iqr_s", "mem_bytes",
                       "seconds_ratio"]].sort_values(["n_params", "gen_median_s"])
        out.append("### Generation speed (same alternating rounds; ratio = seconds / "
                   "evosax Open_ES's)\n\n" + table(shown))
    return "\n".join(out)
