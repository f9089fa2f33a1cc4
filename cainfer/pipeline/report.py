"""A self-contained HTML report of a run directory (tables, figures, diagnostics)."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(x: str) -> str:
    try:
        v = float(x)
    except ValueError:
        return x
    return f"{v:.4g}"


def _z(mean: str, sd: str, truth: float) -> str:
    """``(mean − truth)/sd`` as text (empty when the sd is not a positive number)."""
    try:
        m, s = float(mean), float(sd)
    except ValueError:
        return ""
    return f"{(m - float(truth)) / s:+.2f}" if s > 0 else ""


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.bad { color: #a00; font-weight: bold; } .good { color: #070; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


# parameters of a ratiometric fit (observation.py) by their names in a Calibration
_CALIBRATION = {"R_min": "r_min", "R_max": "r_max", "beta": "beta"}


def _truths(run: Path, prov: dict[str, Any], recordings: set[str]) -> dict[tuple[str, str], dict]:
    """True parameter values per (recording, ROI) where the run's inputs come with them.

    A simulated recording ``<stem>.tif`` (:func:`cainfer.synthetic.simulate_movie`)
    has its truth in ``<stem>_truth.nc`` and its cells' labels in
    ``<stem>_rois.tif`` (label ``i + 1`` is cell ``i``); the truth is shown
    when the run extracted that recording with those ROIs. A ratiometric
    movie's truth carries its calibration (``R_min``, ``R_max``, ``β``),
    which a ratiometric fit infers for each ROI.
    """
    import xarray as xr

    out: dict[tuple[str, str], dict] = {}
    for name in prov.get("inputs", {}):
        path = Path(name)
        rec = path.stem
        truth = path.with_name(f"{rec}_truth.nc")
        traces = run / "traces" / f"{rec}.nc"
        if rec not in recordings or not truth.is_file() or not traces.is_file():
            continue
        try:
            with xr.open_dataset(traces, engine="h5netcdf") as ds:
                source = str(ds.attrs.get("roi_source", ""))
                labels = [str(x.item()) for x in ds["roi"].values]
            with xr.open_dataset(truth, engine="h5netcdf") as ds:
                cells = json.loads(ds.attrs["parameters"])
                cal = json.loads(ds.attrs.get("calibration", "null"))
            # a ratiometric movie's calibration: the constants its fit infers per ROI
            shared = {p: float(cal[k]) for p, k in _CALIBRATION.items()} if cal else {}
        except (OSError, KeyError, ValueError, TypeError):
            continue  # not a truth file of simulate_movie: nothing to show
        if Path(source).name != f"{rec}_rois.tif" or len(cells) != len(labels):
            continue
        for i, label in enumerate(labels):
            out[(rec, label)] = {**cells[i], **shared}
    return out


# the columns every summary.csv row has (pipeline.run.fit_rows)
_SUMMARY_COLUMNS = ("recording", "roi", "ok")


def _read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a run's summary.csv, checked; a ValueError names the file and line."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rd = csv.DictReader(fh)
            missing = [c for c in _SUMMARY_COLUMNS if c not in (rd.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: not a run summary (no column {', '.join(missing)})")
            rows = list(rd)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    if not rows:
        raise ValueError(f"{path}: holds no fits; run the pipeline again to complete it")
    for line, r in enumerate(rows, start=2):
        if r.get("ok") not in ("true", "false") or not r.get("recording") or not r.get("roi"):
            raise ValueError(f"{path}:{line}: not a row of a run summary (recording, roi, ok)")
    return rows


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into a run directory from the files the run wrote.

    Parameters
    ----------
    run_dir : path
        A directory written by :func:`~cainfer.pipeline.run_pipeline`.

    Returns
    -------
    pathlib.Path
        The report.

    Raises
    ------
    ValueError
        If the directory lacks ``summary.csv`` or ``provenance.json`` (the run
        has not finished: run it again to complete it).
    """
    return _write_report(Path(run_dir))


def _write_report(run: Path, *, problems: dict[tuple[str, Any], list[str]] | None = None) -> Path:
    """:func:`write_report`, taking the problems of the fits in ``problems`` as known.

    ``problems`` maps (recording, ROI label) to a fit's problems (the run
    passes those of the fits it made); other fits are read from their files.
    """
    from cainfer.infer import load_fit
    from cainfer.pipeline.run import _fit_paths, _read_provenance, atomic_write

    known = {(rec, str(roi)): p for (rec, roi), p in (problems or {}).items()}
    missing = [n for n in ("summary.csv", "provenance.json") if not (run / n).is_file()]
    if missing:
        raise ValueError(f"{run}: no {' or '.join(missing)}; is this a finished cainfer run?")
    prov = _read_provenance(run / "provenance.json")
    rows = _read_summary(run / "summary.csv")

    fits: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        fits.setdefault((r["recording"], r["roi"]), []).append(r)
    bad = [k for k, rs in fits.items() if rs[0]["ok"] != "true"]

    parts = [f"<h1>cainfer run: {html.escape(run.name)}</h1>"]
    parts.append(
        f"<p>{len(fits)} fits in {len({k[0] for k in fits})} recording(s); "
        + (
            f'<span class="bad">{len(bad)} with failed diagnostics</span>'
            if bad
            else '<span class="good">all diagnostics passed</span>'
        )
        + f". Started {html.escape(str(prov.get('started')))}, finished "
        f"{html.escape(str(prov.get('finished')))}.</p>"
    )

    # the model: what was free (with its prior) and what was fixed
    first = next(iter(fits), None)
    if first is not None:
        fit = load_fit(_fit_paths(run, first[0], first[1])[0])
        params = fit.model.parameters
        settings = fit.settings
        parts.append("<h2>Model</h2>")
        parts.append(
            f"<p>{html.escape(fit.model.name)} model, indicator "
            f"{html.escape(fit.model.indicator.name)}; observation "
            f"{html.escape(str(settings.get('observation', 'dff_exact')))} (residuals "
            f"{html.escape(str(settings.get('residuals', 'white')))}, drift "
            f"{html.escape(str(settings.get('drift', 'none')))}), likelihood "
            f"{html.escape(str(settings.get('likelihood')))}, "
            f"{settings.get('chains')} chains × {settings.get('draws')} draws "
            f"({settings.get('tune')} tuning).</p>"
        )
        free_rows = []
        for name in fit.free:
            pr = params[name].prior
            free_rows.append([name, params[name].unit, pr.kind, pr.a, pr.b, pr.source])
        parts.append("<h3>Free parameters and their default priors</h3>")
        parts.append(_table(["parameter", "unit", "prior", "a", "b", "source"], free_rows))
        parts.append("<h3>Fixed parameters</h3>")
        parts.append(
            _table(
                ["parameter", "unit", "value"],
                [
                    [k, params[k].unit if k in params else "", f"{v:.6g}"]
                    for k, v in sorted(fit.fixed.items())
                ],
            )
        )

    parts.append("<h2>Diagnostics</h2>")
    if bad:
        items = []
        for rec, roi in bad:
            found = known.get((rec, roi))
            if found is None:
                found = load_fit(_fit_paths(run, rec, roi)[0]).problems
            items.append(f"<li>{html.escape(rec)} ROI {html.escape(roi)}: "
                         + html.escape("; ".join(found)) + "</li>")  # fmt: skip
        parts.append("<ul>" + "".join(items) + "</ul>")
    else:
        parts.append(
            "<p>No divergences, every R-hat ≤ 1.01 and bulk ESS ≥ 400; no free parameter "
            "pulled far from its prior or left on a ridge.</p>"
        )

    parts.append("<h2>Posterior summary</h2>")
    cols = ["recording", "roi", "parameter", "mean", "sd", "hdi94_lb", "hdi94_ub", "r_hat",
            "ess_bulk", "ess_tail", "ok"]  # fmt: skip
    table = [[_num(r[c]) if c not in cols[:3] else r[c] for c in cols] for r in rows]
    truths = _truths(run, prov, {k[0] for k in fits})
    if truths:
        cols = [*cols, "truth", "z", "truth in 94% HDI"]
        scored = inside_n = 0
        for line, r in zip(table, rows, strict=True):
            value = truths.get((r["recording"], r["roi"]), {}).get(r["parameter"])
            if value is None:
                line += ["", "", ""]
            else:
                inside = float(r["hdi94_lb"]) <= float(value) <= float(r["hdi94_ub"])
                line += [_num(str(value)), _z(r["mean"], r["sd"], value),
                         "yes" if inside else "NO"]  # fmt: skip
                scored += 1
                inside_n += inside
        parts.append(
            "<p>The recordings are simulated: the true value of each parameter is shown "
            "next to its posterior (from the <code>_truth.nc</code> file beside each movie), "
            "with z, the posterior mean's distance from it in posterior sds. "
            f"<b>{inside_n} of {scored}</b> true values lie inside their 94% HDIs. Calibrated "
            "intervals miss about one value in 17 (|z| beyond about 1.9), so even then not "
            f"every one of {scored} values is inside: all are in about "
            f"{100 * 0.94**scored:.0f} % of recordings, if the values were independent. "
            "A bias shows as misses by many sds, or as many misses.</p>"
        )
    parts.append(_table(cols, table))

    parts.append("<h2>Fits</h2>")
    for rec, roi in fits:
        png = run / "figures" / rec / f"roi_{roi}.png"
        parts.append(f"<h3>{html.escape(rec)}, ROI {html.escape(roi)}</h3>")
        if png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(rec)} ROI {html.escape(roi)}" '
                         f'src="data:image/png;base64,{b64}">')  # fmt: skip

    parts.append("<h2>Provenance</h2>")
    parts.append(
        _table(["input", "sha256"], [[k, v] for k, v in sorted(prov.get("inputs", {}).items())])
    )
    parts.append(_table(["package", "version"], sorted(prov.get("versions", {}).items())))
    parts.append(
        f"<p>Config {html.escape(str(prov.get('config_file')))} (sha256 "
        f"{html.escape(str(prov.get('config_sha256')))}), base seed {prov.get('seed')}:</p>"
    )
    parts.append(f"<pre>{html.escape(str(prov.get('config', '')))}</pre>")

    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cainfer run {html.escape(run.name)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    out = run / "report.html"
    atomic_write(out, doc)
    return out
