"""Small builders over grafana-foundation-sdk for Pronto's dashboards.

Every panel reads the ``${datasource}`` variable, panels flow left to right in rows of 24
columns, and ids count up in order, so a dashboard module lists rows and panels only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import (
    barchart,
    bargauge,
    common,
    dashboard,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

__all__ = [
    "Row",
    "barchart_panel",
    "bargauge_panel",
    "build_dashboard",
    "heatmap_panel",
    "query",
    "query_variable",
    "stat_panel",
    "table_panel",
    "timeseries_panel",
    "to_json",
]

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
Steps = Sequence[tuple[str, float | None]]


def query(
    expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = ""
) -> prometheus.Dataquery:
    """One PromQL target (``fmt``: ``table`` or ``heatmap``)."""
    q = prometheus.Dataquery().ref_id(ref).datasource(DATASOURCE).expr(expr).legend_format(legend)
    if instant:
        q = q.instant()
    if fmt:
        q = q.format(pm.PromQueryFormat(fmt))
    return q


def _thresholds(steps: Steps) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(color=c, value=v) for c, v in steps])
    )


@dataclass
class _Panel:
    builder: Any
    w: int = 8
    h: int = 8


def _common(builder: Any, title: str, description: str, targets: Sequence[Any]) -> Any:
    builder = builder.title(title).description(description).datasource(DATASOURCE)
    for i, target in enumerate(targets):
        builder = builder.with_target(target.ref_id(chr(ord("A") + i)))
    return builder


def timeseries_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    unit: str = "",
    thresholds: Steps = (),
    w: int = 8,
    h: int = 8,
) -> _Panel:
    """A time series; ``thresholds`` are also drawn as lines."""
    b = _common(timeseries.Panel(), title, description, targets)
    if unit:
        b = b.unit(unit)
    if thresholds:
        b = b.thresholds(_thresholds(thresholds)).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE)
        )
    return _Panel(b, w, h)


def stat_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    unit: str = "",
    thresholds: Steps = (),
    w: int = 6,
    h: int = 5,
) -> _Panel:
    """The last value, its background coloured by ``thresholds``."""
    b = _common(stat.Panel(), title, description, targets)
    if unit:
        b = b.unit(unit)
    if thresholds:
        b = b.thresholds(_thresholds(thresholds))
    b = b.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])).color_mode(
        cm.BigValueColorMode.BACKGROUND
    )
    return _Panel(b, w, h)


def bargauge_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    thresholds: Steps = (),
    w: int = 8,
    h: int = 8,
) -> _Panel:
    """Horizontal bars of the last values."""
    b = _common(bargauge.Panel(), title, description, targets)
    if thresholds:
        b = b.thresholds(_thresholds(thresholds))
    b = (
        b.orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    return _Panel(b, w, h)


def heatmap_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    w: int = 8,
    h: int = 8,
) -> _Panel:
    """Pre-bucketed (``le``) series as a heatmap."""
    b = _common(heatmap.Panel(), title, description, targets)
    b = b.calculate(False).y_axis(heatmap.YAxisConfig().unit("none")).cell_gap(1)
    # the SDK's default hides the tooltip, Grafana's shows it
    b = b.show_tooltip()
    return _Panel(b, w, h)


def barchart_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    unit: str = "",
    w: int = 8,
    h: int = 8,
) -> _Panel:
    """Instant table queries merged into one bar chart (e.g. live vs reference)."""
    b = _common(barchart.Panel(), title, description, targets)
    if unit:
        b = b.unit(unit)
    b = b.with_transformation(dm.DataTransformerConfig(id_val="merge"))
    return _Panel(b, w, h)


def table_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    description: str = "",
    unit: str = "",
    w: int = 8,
    h: int = 8,
) -> _Panel:
    b = _common(table.Panel(), title, description, targets)
    if unit:
        b = b.unit(unit)
    return _Panel(b, w, h)


@dataclass
class Row:
    """A row header and the panels under it."""

    title: str
    panels: list[_Panel] = field(default_factory=list)

    def __init__(self, title: str, *panels: _Panel) -> None:
        self.title, self.panels = title, list(panels)


def query_variable(
    name: str, label: str, expr: str, *, multi: bool = True
) -> dashboard.QueryVariable:
    """A Prometheus ``label_values`` variable with an "All" option."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": expr, "refId": name})
        .include_all(True)
        .all_value(".*")
        .multi(multi)
        .current(dm.VariableOption(text="All", value="$__all"))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def build_dashboard(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[Row],
    variables: Sequence[dashboard.QueryVariable] = (),
) -> dm.Dashboard:
    """The dashboard with ids and grid positions assigned (rows of 24 columns)."""
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["pronto"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .version(1)
        .annotations([])
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .link(
            dashboard.DashboardLink("Pronto")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["pronto"])
            .as_dropdown(True)
        )
    )
    for variable in variables:
        d = d.with_variable(variable)
    next_id, y = 1, 0
    for row in rows:
        d = d.with_row(
            dashboard.Row(row.title).id(next_id).grid_pos(dm.GridPos(h=1, w=24, x=0, y=y))
        )
        next_id, y = next_id + 1, y + 1
        x = line_height = 0
        for panel in row.panels:
            if x + panel.w > 24:
                x, y, line_height = 0, y + line_height, 0
            grid = dm.GridPos(h=panel.h, w=panel.w, x=x, y=y)
            d = d.with_panel(panel.builder.id(next_id).grid_pos(grid))
            next_id, x, line_height = next_id + 1, x + panel.w, max(line_height, panel.h)
        y += line_height
    built = d.build()
    built.schema_version = 39
    return built


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        # a threshold's base step keeps "value": null (minus infinity to Grafana)
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None or k == "value"}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def to_json(built: dm.Dashboard) -> str:
    """Grafana JSON of ``built``; unset options (null) are left out, as Grafana does."""
    doc = _drop_nulls(json.loads(json.dumps(built, cls=JSONEncoder)))
    for variable in doc["templating"]["list"]:
        query_ = variable.get("query")
        if isinstance(query_, dict):
            # what Grafana's variable editor shows; the SDK's variable model has no field for it
            variable["definition"] = query_["query"]
    return json.dumps(doc, indent=2) + "\n"
