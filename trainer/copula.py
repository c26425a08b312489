"""A Gaussian copula for synthetic tabular rows, and the HTML report comparing them.

The model (as in the ``copulas`` library's GaussianMultivariate with empirical marginals):

- every column is mapped to a uniform score: numeric columns through their empirical CDF
  (mid-ranks), categorical columns by giving each category an interval of [0, 1) as wide as
  its frequency and drawing a point inside it;
- uniform scores become standard normal scores; their correlation matrix is the copula;
- sampling draws correlated normal scores, maps them back to uniforms, and inverts each
  marginal: the empirical quantile for numeric columns (integers stay integers), the
  category whose interval holds the uniform for categorical ones.

Marginals are reproduced closely and pairwise rank correlations approximately; the report
compares both, column by column. A categorical column's intervals follow its frequency
order, so its dependence on other columns is kept when it is monotone in that order and
weakened when it is not (as with any Gaussian copula over such an encoding). Built on scipy's
normal distribution and numpy: the ``copulas`` package itself requires pandas < 3, which
this project does not use.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["GaussianCopula", "column_stats", "synth_report"]

#: numeric columns with at most this many distinct values are modelled as categories
MAX_NUMERIC_LEVELS_AS_CATEGORY = 2


@dataclass
class _Column:
    name: str
    kind: str  # "numeric" | "categorical"
    values: np.ndarray  # sorted values (numeric) or categories (categorical)
    cuts: np.ndarray | None = None  # category interval upper bounds
    integer: bool = False
    dtype: Any = None


class GaussianCopula:
    """Fit on a frame, sample frames with the same columns."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.columns: list[_Column] = []
        self.correlation: np.ndarray | None = None

    def fit(self, frame: pd.DataFrame) -> GaussianCopula:
        from scipy.stats import norm

        if len(frame) < 2:
            raise ValueError("need at least two rows to fit a copula")
        scores = []
        self.columns = []
        for name in frame.columns:
            col = frame[name]
            numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            if col.isna().any():
                raise ValueError(f"column {name!r} has missing values")
            if numeric and col.nunique() > MAX_NUMERIC_LEVELS_AS_CATEGORY:
                values = col.to_numpy(dtype=np.float64)
                u = (pd.Series(values).rank(method="average").to_numpy() - 0.5) / len(values)
                integer = pd.api.types.is_integer_dtype(col)
                self.columns.append(
                    _Column(name, "numeric", np.sort(values), integer=integer, dtype=col.dtype)
                )
            else:
                counts = col.value_counts(sort=True)
                cats = counts.index.to_numpy()
                cuts = np.cumsum(counts.to_numpy()) / len(col)
                lower = np.concatenate(([0.0], cuts[:-1]))
                pos = pd.Index(cats).get_indexer(col.to_numpy())
                width = cuts[pos] - lower[pos]
                u = lower[pos] + width * self.rng.uniform(0.05, 0.95, len(col))
                self.columns.append(_Column(name, "categorical", cats, cuts, dtype=col.dtype))
            scores.append(norm.ppf(np.clip(u, 1e-6, 1 - 1e-6)))
        z = np.vstack(scores)
        corr = np.atleast_2d(np.corrcoef(z))
        corr = np.nan_to_num(corr)  # a constant column has no correlation with anything
        np.fill_diagonal(corr, 1.0)
        # nearest positive semi-definite matrix: clip negative eigenvalues
        w, v = np.linalg.eigh(corr)
        corr = (v * np.clip(w, 1e-9, None)) @ v.T
        d = np.sqrt(np.diag(corr))
        self.correlation = corr / np.outer(d, d)
        return self

    def sample(self, rows: int) -> pd.DataFrame:
        from scipy.stats import norm

        if self.correlation is None:
            raise RuntimeError("fit the copula first")
        z = self.rng.multivariate_normal(np.zeros(len(self.columns)), self.correlation, rows)
        u = norm.cdf(z)
        out: dict[str, Any] = {}
        for i, c in enumerate(self.columns):
            if c.kind == "numeric":
                n = len(c.values)
                values = np.interp(u[:, i] * n - 0.5, np.arange(n), c.values)
                out[c.name] = np.rint(values).astype(c.dtype) if c.integer else values
            else:
                assert c.cuts is not None
                idx = np.minimum(np.searchsorted(c.cuts, u[:, i], side="right"), len(c.cuts) - 1)
                out[c.name] = pd.Series(c.values[idx]).astype(c.dtype).to_numpy()
        return pd.DataFrame(out)


def _plot(real: pd.Series, synth: pd.Series, numeric: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=80)
    if numeric:
        bins = np.histogram_bin_edges(real.to_numpy(dtype=float), bins=30)
        ax.hist(real, bins=list(bins), alpha=0.5, density=True, label="real")
        ax.hist(synth, bins=list(bins), alpha=0.5, density=True, label="synthetic")
    else:
        top = real.value_counts(normalize=True).head(12)
        other = synth.value_counts(normalize=True).reindex(top.index, fill_value=0.0)
        x = np.arange(len(top))
        ax.bar(x - 0.2, top.to_numpy(), 0.4, label="real")
        ax.bar(x + 0.2, other.to_numpy(), 0.4, label="synthetic")
        ax.set_xticks(x, [str(v)[:12] for v in top.index], rotation=60, fontsize=6)
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def column_stats(real: pd.DataFrame, synth: pd.DataFrame, copula: GaussianCopula) -> list[dict]:
    """Per column: the distance between real and synthetic distributions."""
    from scipy.stats import ks_2samp

    stats = []
    for c in copula.columns:
        r, s = real[c.name], synth[c.name]
        if c.kind == "numeric":
            ks = float(ks_2samp(r.to_numpy(float), s.to_numpy(float)).statistic)
            stats.append(
                {
                    "column": c.name,
                    "kind": "numeric",
                    "distance": ks,
                    "measure": "KS statistic",
                    "real": f"mean {r.mean():.4g}, sd {r.std():.4g}",
                    "synthetic": f"mean {s.mean():.4g}, sd {s.std():.4g}",
                }
            )
        else:
            p = r.astype(str).value_counts(normalize=True)
            q = s.astype(str).value_counts(normalize=True)
            tvd = float(0.5 * p.subtract(q, fill_value=0.0).abs().sum())
            stats.append(
                {
                    "column": c.name,
                    "kind": "categorical",
                    "distance": tvd,
                    "measure": "total variation",
                    "real": f"{r.nunique()} categories",
                    "synthetic": f"{s.nunique()} categories",
                }
            )
    return stats


def synth_report(real: pd.DataFrame, synth: pd.DataFrame, copula: GaussianCopula) -> str:
    """A self-contained HTML page comparing real and synthetic data per column."""
    rows = []
    for st, c in zip(column_stats(real, synth, copula), copula.columns, strict=True):
        img = _plot(real[c.name], synth[c.name], c.kind == "numeric")
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    st["column"],
                    st["kind"],
                    f"{st['measure']} {st['distance']:.3f}",
                    st["real"],
                    st["synthetic"],
                )
            )
            + f'<td><img alt="{html.escape(c.name)}" src="data:image/png;base64,{img}"></td></tr>'
        )
    numeric = [c.name for c in copula.columns if c.kind == "numeric"]
    corr = ""
    if len(numeric) >= 2:
        gap = (real[numeric].corr(method="spearman") - synth[numeric].corr(method="spearman")).abs()
        corr = (
            f"<p>Largest gap between real and synthetic Spearman correlations of numeric "
            f"columns: {float(np.nanmax(gap.to_numpy())):.3f}</p>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Synthetic data report</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top}table{border-collapse:collapse}</style></head><body>"
        f"<h1>Synthetic data report</h1><p>{len(real)} real rows, {len(synth)} synthetic rows, "
        f"Gaussian copula over {len(copula.columns)} columns.</p>{corr}"
        "<table><tr><th>column</th><th>kind</th><th>distance</th><th>real</th>"
        "<th>synthetic</th><th>distribution</th></tr>" + "".join(rows) + "</table></body></html>"
    )
