"""A plan's report: throughput, downloads and cache use over time, as a PNG or one self-contained HTML file.

matplotlib (the ``[plot]`` extra) is imported when a report is written, never at import time.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from shardflow.plan.errors import MissingDependencyError, PlanInputError
from shardflow.plan.simulate import Plan

__all__ = ["write_report", "summary_rows", "human_bytes"]

FORMATS = (".png", ".html", ".htm")


def human_bytes(count: float | None) -> str:
    """``count`` bytes in binary units for a person (``-`` for None)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} s"


def summary_rows(plan: Plan) -> list[tuple[str, str]]:
    """The summary as (label, value) rows: the terminal table and the HTML report's table."""
    s, c, d = plan.summary, plan.config, plan.dataset
    quality = s["shuffle_quality"]
    limit = "none" if c.cache_limit is None else human_bytes(c.cache_limit)
    rows = [
        ("dataset", f"{d['source']}: {d['shards']:,} shards, {d['samples']:,} samples, "
         f"{human_bytes(d['download_bytes'])} to download"),
        ("world", f"{c.nodes} node(s) x {c.ranks_per_node} rank(s) x {c.workers_per_rank} worker(s), "
         f"batch {c.batch_size}, {c.shuffle_algo if c.shuffle else 'no shuffle'}"),
        ("network", f"{human_bytes(c.bandwidth)}/s per node, {c.latency * 1000:g} ms latency; "
         f"cache_limit {limit}, "
         f"predownload {c.lookahead}"),
        ("epoch time", _seconds(s["epoch_seconds"])),
        ("time to first batch", _seconds(s["time_to_first_batch_seconds"])),
        ("stalls", f"{_seconds(s['stall_seconds'])} ({100 * s['stall_fraction']:.1f}% of the epoch; "
         f"longest {_seconds(s['longest_stall_seconds'])})"),
        ("throughput", f"{s['throughput_samples_per_second']:,.0f} samples/s (world)"),
        ("downloaded", f"{human_bytes(s['downloaded_bytes_per_node'])} per node "
         f"({s['downloads_per_node']:,.0f} downloads, "
         f"{s['redownloads_per_node']:,.0f} again after eviction); "
         f"{human_bytes(s['downloaded_bytes'])} in all"),
        ("network busy", f"{100 * s['network_busy_fraction']:.0f}%"),
        ("peak cache", f"{human_bytes(s['peak_cache_bytes'])} per node "
         f"({human_bytes(s['peak_cache_held_bytes'])} with evicted shards still read)"),
        ("smallest cache_limit", f"{human_bytes(s['smallest_accepted_cache_limit'])} accepted; "
         + ("not searched" if s["smallest_full_speed_cache_limit"] is None
            else f"{human_bytes(s['smallest_full_speed_cache_limit'])} at full speed")),
        ("shuffle quality", "-" if quality["median_neighbour_distance"] is None else
         f"neighbours written {quality['median_neighbour_distance']:,.0f} samples apart (median), "
         f"{quality['vs_random']:.2f} of a uniform shuffle's; {100 * quality['same_shard_fraction']:.1f}% "
         "from the same shard"),
        ("plan took", _seconds(s["plan_seconds"])),
    ]  # fmt: skip
    return rows + [("note", note) for note in plan.notes]


def _figure(plan: Plan) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "writing a report needs matplotlib: pip install 'shardflow-plan[plot]'"
        ) from None
    t = plan.timeline
    times = t["time_seconds"]
    width = (times[1] - times[0]) if len(times) > 1 else 1.0
    mib = float(1 << 20)
    figure, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True, constrained_layout=True)
    top, middle, bottom = axes
    rates = t["throughput_samples_per_second"]
    top.plot(times, rates, drawstyle="steps-post", color="tab:blue", alpha=0.3, label="per bin")
    span = max(1, len(rates) // 20)  # a moving average over a twentieth of the epoch
    smooth = [sum(rates[max(0, k - span + 1) : k + 1]) / len(rates[max(0, k - span + 1) : k + 1])
              for k in range(len(rates))]  # fmt: skip
    top.plot(times, smooth, color="tab:blue", label="moving average")
    rate = plan.summary["throughput_samples_per_second"]
    if rate:
        top.axhline(rate, color="tab:blue", linestyle=":", label=f"epoch average {rate:,.0f}/s")
        top.legend(loc="lower right")
    top.set_ylabel("samples / s (world)")
    top.set_title("throughput over time")
    middle.bar(times, [v / mib for v in t["download_bytes_per_second_per_node"]], width=width, align="edge",
               color="tab:orange")  # fmt: skip
    middle.axhline(plan.config.bandwidth / mib, color="black", linestyle=":", label="bandwidth")
    middle.set_ylabel("MiB / s per node")
    middle.set_title("downloads over time")
    middle.legend(loc="lower right")
    bottom.plot([0.0, *(x + width for x in times)], [0.0, *(v / mib for v in t["cache_bytes"])],
                drawstyle="steps-post", color="tab:green")  # fmt: skip
    if plan.config.cache_limit is not None:
        bottom.axhline(plan.config.cache_limit / mib, color="tab:red", linestyle="--", label="cache_limit")
        bottom.legend(loc="lower right")
    bottom.set_ylabel("MiB in the node's cache")
    bottom.set_title("cache use over time")
    bottom.set_xlabel("seconds into the epoch")
    s = plan.summary
    figure.suptitle(
        f"epoch {s['epoch_seconds']:,.1f} s, first batch {s['time_to_first_batch_seconds'] or 0:,.2f} s, "
        f"stalls {100 * s['stall_fraction']:.0f}%, {human_bytes(s['downloaded_bytes_per_node'])} downloaded "
        f"and {human_bytes(s['peak_cache_bytes'])} peak cache per node"
    )
    return figure, plt


def write_report(plan: Plan, path: str | Path) -> Path:
    """Write ``plan``'s plots to ``path``: a PNG, or (``.html``) one HTML file holding the image and the
    summary table, with nothing to fetch.

    Raises:
        PlanInputError: ``path`` ends in something else (the message names it).
        MissingDependencyError: matplotlib is not installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise PlanInputError(f"report {path}: name a .png or .html file")
    if not path.parent.is_dir():
        raise PlanInputError(f"report {path}: the folder {path.parent} does not exist")
    figure, plt = _figure(plan)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(figure)
    if suffix == ".png":
        path.write_bytes(buffer.getvalue())
        return path
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    rows = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in summary_rows(plan)
    )
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>shardflow plan</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em;vertical-align:top}"
        "td,th{border-bottom:1px solid #ddd;padding:4px}</style></head><body>\n<h1>shardflow plan</h1>\n"
        f"<table>\n{rows}\n</table>\n<img alt='throughput, downloads and cache use over time' "
        f"src='data:image/png;base64,{image}'>\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
