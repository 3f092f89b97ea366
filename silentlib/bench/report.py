"""The benchmark's results as text: one line per timed row while it runs, the table, the report."""
from __future__ import annotations

import time

from . import timing
from .overhead import format_overhead


def row_line(r):
    """One timed row as a line of progress."""
    what = f"{r['seconds']:10.4f} s  x{r['ratio']:8.1f}" if r["status"] == "ok" else f"{r['status']:>12}"
    if r["status"] == "skip":
        what += f" (~{r['predicted']:.0f} s)"
    rate = f"  {r['flop_rate'] / 1e12:7.3f} TFLOP/s" if r["flop_rate"] else ""
    if r["peak_fraction"]:
        rate += f" ({100 * r['peak_fraction']:.0f}% of matmul)"
    return f"  P={r['P']:>6} N={r['width']:>5} L={r['depth']} C={r['C']:>2}  {r['method']:<9} {what}{rate}"


def _header(r0, peer):
    """The table's title and column heads."""
    pcols = f" {'NT s':>8} {'sl/NT':>5}" if peer else ""
    clock = "CPU seconds of the process" if timing.CLOCK is time.process_time else "wall seconds"
    return [f"exact NTK timing ({clock}, medians), ReLU MLPs with D = 784, {r0['dtype']}, device {r0['device']}, "
            f"torch {r0['torch']}"
            + (" | NT: neural-tangents (layerwise vs STRUCTURED_DERIVATIVES, jacobian vs JACOBIAN_CONTRACTION, "
               "vp vs NTK_VECTOR_PRODUCTS), jitted, compile time excluded" if peer else ""),
            f"{'P':>6} {'N':>5} {'L':>2} {'C':>3} {'params':>11} | {'layerwise s':>11} {'TFLOP/s':>8} "
            f"{'%mm':>4}{pcols} | {'jacobian s':>10} {'x':>7}{pcols} | {'vp s':>10} {'x':>7}{pcols} | "
            f"{'max diff':>8}"]


def _baseline_cell(r, peer):
    """A baseline method's seconds and ratio to layerwise (and the peer's), or its status."""
    if r is None:
        return f"{'-':>10} {'':>7}" + (f" {'-':>8} {'':>5}" if peer else "")
    cell = f"{r['status']:>10} {'':>7}" if r["status"] != "ok" else f"{r['seconds']:>10.4f} {r['ratio']:>7.1f}"
    return cell + _peer_cells(r, peer)


def format_table(rows) -> str:
    """The rows of :func:`~silentlib.bench.timing.run_benchmark` as a table: one line per case, the three methods
    side by side (with neural-tangents' time and silentlib / neural-tangents for each method when it was
    timed)."""
    if not rows:
        return "(no rows)"
    peer = any("peer" in r for r in rows)
    lines = _header(rows[0], peer)
    cases = {}
    for r in rows:
        cases.setdefault((r["P"], r["width"], r["depth"], r["C"]), {})[r["method"]] = r
    for (P, N, L, C), by in cases.items():
        lw = by["layerwise"]
        cells = [_baseline_cell(by.get(m), peer) for m in ("jacobian", "vp")]
        diffs = [r["max_rel_diff"] for r in by.values() if r["method"] != "layerwise" and r["max_rel_diff"] is not None]
        diffs += [r["peer_max_rel_diff"] for r in by.values() if r.get("peer_max_rel_diff") is not None]
        pct = f"{100 * lw['peak_fraction']:>4.0f}" if lw["peak_fraction"] else f"{'':>4}"
        lines.append(f"{P:>6} {N:>5} {L:>2} {C:>3} {lw['n_params']:>11,} | {lw['seconds']:>11.4f} "
                     f"{lw['flop_rate'] / 1e12:>8.3f} {pct}{_peer_cells(lw, peer)} | {cells[0]} | {cells[1]} | "
                     f"{max(diffs) if diffs else float('nan'):>8.1e}")
    return "\n".join(lines)


def _peer_cells(r, peer):
    if not peer:
        return ""
    if r.get("peer_seconds") is None:
        return f" {str(r.get('peer_status', '-'))[:8]:>8} {'':>5}"
    ratio = f"{r['peer_ratio']:>5.2f}" if r.get("peer_ratio") is not None else f"{'':>5}"
    return f" {r['peer_seconds']:>8.4f} {ratio}"


def _rates(report):
    """", the higher of 0.180 (before the grid) and 0.195 (after)" when both were measured."""
    if "matmul_flop_rates" not in report:
        return ""
    before, after = (r / 1e12 for r in report["matmul_flop_rates"])
    return f", the higher of {before:.3f} (before the grid) and {after:.3f} (after)"


def format_report(report) -> str:
    """The text report of :func:`~silentlib.bench.grid.run_grid`'s result: the table, NTK tracking, the
    Wide-ResNet and the cost of ntk's checks."""
    lines = [format_table(report["rows"])]
    lines.insert(0, f"versions: {report['versions']}; TF32 off; {report['grid']} grid; "
                    f"float matmul throughput {report['matmul_flop_rate'] / 1e12:.3f} TFLOP/s"
                    + _rates(report) + " (%mm: layerwise FLOP/s as a share of it)")
    if "tracking" not in report:
        return "\n".join(lines)
    t = report["tracking"]
    lines.append(f"\nNTK tracking during training (P = {t['P']}, N = {t['width']}, L = 2, {t['n_steps']} GD steps, "
                 f"{t['n_records']} records): {t['plain_seconds']:.2f} s without, {t['tracked_seconds']:.2f} s with: "
                 f"+{100 * t['overhead']:.0f}%")
    for g in report["generic"]:
        diff = "" if g["max_rel_diff_to_jacobian"] is None else f", max rel diff to jacobian {g['max_rel_diff_to_jacobian']:.1e}"
        lines.append(f"{g['model']}, {g['n_params']:,} parameters, P = {g['P']}: {g['method']:<8} "
                     f"{g['seconds']:8.2f} s (blocks of {g['block_size']}, {g['groups']} parameter group(s), "
                     f"kernel {tuple(g['kernel_shape'])}{diff})")
    if "checks" in report:
        lines.append(format_overhead(report["checks"]))
    return "\n".join(lines)
