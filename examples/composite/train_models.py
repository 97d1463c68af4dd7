"""Train the four small credit-risk models the credit-score graph calls, and a second version of
credit-income to canary inside the graph.

Each model reads the same four features per applicant (years of credit history, yearly income in
thousands, credit utilisation 0..1, late payments in the last two years) and answers one output,
``value``: the estimated probability of default. The data are synthetic, drawn from a fixed seed.

    python examples/composite/train_models.py --output-dir /tmp/mlrollouts-credit
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.linear_model import HuberRegressor, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

FEATURES = ("years_of_history", "income_k", "utilisation", "late_payments")


def applicants(count: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Features and the probability of default they imply (plus noise)."""
    rng = np.random.default_rng(seed)
    years = rng.uniform(0, 30, count)
    income = rng.lognormal(mean=3.8, sigma=0.5, size=count)
    utilisation = rng.beta(2, 3, count)
    late = rng.poisson(0.8, count).astype(float)
    logit = -0.5 + 1.8 * utilisation + 0.45 * late - 0.012 * income - 0.05 * years
    risk = 1 / (1 + np.exp(-logit)) + rng.normal(0, 0.03, count)
    return np.column_stack([years, income, utilisation, late]), np.clip(risk, 0, 1)


def train(output_dir: Path) -> list[Path]:
    features, risk = applicants(4000)
    thin = features[:, 0] < 2
    # Only types skops trusts by default, so the model server loads the files without --trust-type.
    models = {
        "credit-income-v1": Ridge(alpha=1.0).fit(features, risk),
        "credit-income-v2": make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge(alpha=0.1)).fit(
            features, risk
        ),
        "credit-history-v1": make_pipeline(StandardScaler(), HuberRegressor()).fit(features, risk),
        "credit-behaviour-v1": make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge()).fit(
            features, risk
        ),
        "credit-thin-file-v1": Ridge(alpha=0.5).fit(features[thin], risk[thin]),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in models.items():
        path = output_dir / f"{name}.skops"
        sio.dump(model, path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/mlrollouts-credit"))
    args = parser.parse_args()
    for path in train(args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
