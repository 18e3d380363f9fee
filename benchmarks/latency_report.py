"""Judging the latency benchmark's results against the issue's goals, and its markdown report.

Candidates are named as `benchmarks.latency` builds them; speed-ups are paired (per-round time ratios, median), the
estimate that holds up best on a shared machine.
"""

OURS_REPARAM = "ours reparam"
YARDSTICK = "HF CLIP ViT-B/16"
# Candidates that are other implementations of the same variant (the yardstick is a different model).
REFERENCES = ("apple reparam", "open_clip as built", "open_clip reparam", "timm reparam")
OURS_FAST = ("ours fast", "ours compile", "ours onnxruntime", "ours onnxruntime int8", "ours openvino",
             "ours openvino int8")
OPEN_CLIP = ("open_clip as built", "open_clip reparam")
GOAL_SPEEDUP_OVER_OPEN_CLIP = 1.5
GOAL_SPEEDUP_OVER_VIT_B16 = 2.3


def _ratio(group: dict, slow: str, fast: str) -> float | None:
    """Paired speed-up of `fast` over `slow` (>1: `fast` is faster), from the per-round times."""
    cands = group["candidates"]
    if slow not in cands or fast not in cands:
        return None
    pairs = [s / f for s, f in zip(cands[slow]["times_ms"], cands[fast]["times_ms"])]
    pairs.sort()
    mid = len(pairs) // 2
    return pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2


def _fastest(group: dict, names) -> str | None:
    present = [n for n in names if n in group["candidates"]]
    return min(present, key=lambda n: group["candidates"][n]["median_ms"]) if present else None


def evaluate_goals(results: dict) -> list[dict]:
    """The issue's goals, each with the measured paired speed-up and whether it is met."""
    goals = []

    def add(goal, group, ours, versus, target, **where):
        if ours and versus and versus in group["candidates"]:
            goals.append(dict(goal=goal, **where, ours=ours, versus=versus, target=target,
                              speedup=_ratio(group, versus, ours)))

    for variant, result in results.items():
        for batch_key, groups in result.items():
            if not batch_key.startswith("batch_"):
                continue
            for tower, group in groups.items():
                where = dict(variant=variant, batch=batch_key, tower=tower)
                fast = _fastest(group, OURS_FAST)
                add("ours reparam eager no slower than the fastest reference", group, OURS_REPARAM,
                    _fastest(group, REFERENCES), 1.0, **where)
                if variant == "mobileclip-s2" and batch_key == "batch_1":
                    goal = f"ours fastest >= {GOAL_SPEEDUP_OVER_OPEN_CLIP}x open_clip's fastest S2"
                    add(goal, group, fast, _fastest(group, OPEN_CLIP), GOAL_SPEEDUP_OVER_OPEN_CLIP, **where)
                if variant in ("mobileclip-s2", "mobileclip2-s2") and tower == "model":
                    goal = f"S2 >= {GOAL_SPEEDUP_OVER_VIT_B16}x CLIP ViT-B/16, images + texts"
                    for ours in (OURS_REPARAM, fast):
                        add(goal, group, ours, YARDSTICK, GOAL_SPEEDUP_OVER_VIT_B16, **where)
    for goal in goals:
        goal["met"] = goal["speedup"] >= goal["target"]
    return goals


def _cell(stats: dict | None) -> str:
    if stats is None:
        return ""
    return (f"{stats['median_ms']:.1f} [{stats['q1_ms']:.0f}–{stats['q3_ms']:.0f}] "
            f"({stats['min_ms']:.0f}–{stats['max_ms']:.0f})")


def markdown(results: dict, goals: list[dict], meta: dict) -> str:
    lines = [f"Device: {meta['device']} ({meta['dtype']}), {meta['threads']} threads, torch {meta['torch']}. "
             "Cells: median ms [IQR] (min–max); ×: paired time ratio to `ours reparam` (>1 = slower than ours); "
             "params and peak memory per tower, in column order."]
    for variant, result in results.items():
        for batch_key, groups in result.items():
            if not batch_key.startswith("batch_"):
                continue
            towers = list(groups)
            names = list(dict.fromkeys(n for g in groups.values() for n in g["candidates"]))
            lines += ["", f"### {variant}, {batch_key.replace('_', ' ')}", "",
                      "| candidate | params (M) | " + " | ".join(f"{t} ms | {t} ×" for t in towers)
                      + " | peak Δ MiB |",
                      "|---|---|" + "---|---|" * len(towers) + "---|"]
            for name in names:
                cells, params, peaks = [], [], []
                for tower in towers:
                    stats = groups[tower]["candidates"].get(name)
                    ratio = groups[tower].get("ratios_vs_ours_reparam", {}).get(name)
                    cells += [_cell(stats), f"{ratio['paired']:.2f}" if ratio and stats else ""]
                    peak = stats and stats["peak_mem_delta_mb"]
                    params.append(f"{stats['params_m']:.1f}" if stats else "–")
                    peaks.append("–" if peak is None else f"{peak:.0f}")
                lines.append(f"| {name} | {'/'.join(params)} | " + " | ".join(cells) + f" | {'/'.join(peaks)} |")
            lines += ["", "Rounds kept (discarded as bursts), 1-min load average before–after: " + "; ".join(
                f"{t} {len(next(iter(g['candidates'].values()))['times_ms'])} ({g['rounds_discarded_as_bursts']}), "
                f"{g['load_average_1min'][0]:.1f}–{g['load_average_1min'][1]:.1f}" for t, g in groups.items())]
    if goals:
        lines += ["", "### Goals (paired speed-ups)", "",
                  "| goal | variant | batch | tower | ours | vs | speed-up | met |", "|---" * 8 + "|"]
        for g in goals:
            speedup = "n/a" if g["speedup"] is None else f"{g['speedup']:.2f}×"
            lines.append(f"| {g['goal']} | {g['variant']} | {g['batch'].removeprefix('batch_')} | {g['tower']} | "
                         f"{g.get('ours', OURS_REPARAM)} | {g['versus']} | {speedup} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines)


__all__ = ["GOAL_SPEEDUP_OVER_OPEN_CLIP", "GOAL_SPEEDUP_OVER_VIT_B16", "OPEN_CLIP", "OURS_FAST", "OURS_REPARAM",
           "REFERENCES", "YARDSTICK", "evaluate_goals", "markdown"]
