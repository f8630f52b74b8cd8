"""Model registry with a promotion gate: every trained segmentation model becomes a version of
``customer_segmentation`` with alias ``challenger``; it takes alias ``champion`` only when the gate
passes. Aliases, not the deprecated stages.

The gate (``segment.gate`` in config, logged as params of the training run and as tags of the
version):

* the first model of the registered model (no champion yet) is promoted, whatever its figures
  (without a champion nobody can be scored; a segment below the minimum share is named in the
  reason);
* otherwise the challenger's silhouette must not be lower than the champion's by more than
  ``silhouette_tolerance`` (silhouettes compared as recorded at each model's training);
* and no segment may hold less than ``min_segment_share`` of the customers (a near-empty
  segment is a sign of outliers pulling a centroid, not a marketing group).

The decision is written as version tags ``gate.decision`` (promoted / rejected) and
``gate.reason`` (one sentence naming the figures), plus the figures themselves, so a reviewer
sees in the MLflow UI why a version is or is not the champion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CHAMPION = "champion"
CHALLENGER = "challenger"
SILHOUETTE_TAG = "silhouette"
MIN_SHARE_TAG = "min_segment_share"


@dataclass(frozen=True)
class GatePolicy:
    silhouette_tolerance: float = 0.02
    min_segment_share: float = 0.02


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    champion_version: str | None  # the champion the challenger was compared with

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


def evaluate_gate(
    silhouette: float,
    segment_shares: Sequence[float],
    champion_silhouette: float | None,
    champion_version: str | None,
    policy: GatePolicy,
) -> GateDecision:
    """Pure gate: promote or not, and why (see the module notes)."""
    smallest = min(segment_shares) if segment_shares else 0.0
    if champion_version is None:
        # The first model becomes champion whatever its figures: without one nobody can be
        # scored. A small segment is said in the reason, and later challengers must pass.
        small = (
            f"; its smallest segment is below the minimum {policy.min_segment_share:.2%}, "
            f"which every later challenger must meet"
            if smallest < policy.min_segment_share else ""
        )
        return GateDecision(
            True,
            f"first model: no champion yet (silhouette {silhouette:.4f}, smallest segment "
            f"{smallest:.2%}){small}",
            None,
        )
    if smallest < policy.min_segment_share:
        return GateDecision(
            False,
            f"smallest segment holds {smallest:.2%} of customers, below the minimum "
            f"{policy.min_segment_share:.2%}",
            champion_version,
        )
    if champion_silhouette is None:
        # A champion the job did not register (the alias moved by hand to an untagged
        # version): nothing to compare with, and a person chose it, so it stays.
        return GateDecision(
            False,
            f"champion v{champion_version} has no recorded silhouette (tag "
            f"{SILHOUETTE_TAG}; was the alias moved by hand?): not compared, the champion "
            f"stays; tag it, or move the alias by hand",
            champion_version,
        )
    floor = champion_silhouette - policy.silhouette_tolerance
    if silhouette < floor:
        return GateDecision(
            False,
            f"silhouette {silhouette:.4f} is below champion v{champion_version}'s "
            f"{champion_silhouette:.4f} minus tolerance {policy.silhouette_tolerance:g}",
            champion_version,
        )
    return GateDecision(
        True,
        f"silhouette {silhouette:.4f} vs champion v{champion_version}'s "
        f"{champion_silhouette:.4f} (tolerance {policy.silhouette_tolerance:g}); smallest "
        f"segment {smallest:.2%} >= {policy.min_segment_share:.2%}",
        champion_version,
    )


def champion(client, model_name: str) -> tuple[str | None, float | None]:
    """(version, recorded silhouette) of the current champion, or (None, None)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None, None
    value = version.tags.get(SILHOUETTE_TAG)
    return str(version.version), (float(value) if value is not None else None)


def register_and_gate(
    model_uri: str,
    model_name: str,
    *,
    silhouette: float,
    segment_shares: Sequence[float],
    policy: GatePolicy,
    tags: Mapping[str, str],
) -> tuple[str, GateDecision]:
    """Register ``model_uri`` as a new version (alias challenger), apply the gate, record it.

    Called only after the training run has logged everything, so a failure before this point
    leaves the registry untouched. Returns (new version, decision).
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    champion_version, champion_silhouette = champion(client, model_name)
    decision = evaluate_gate(
        silhouette, segment_shares, champion_silhouette, champion_version, policy
    )
    version_tags = {
        **{k: str(v) for k, v in tags.items()},
        SILHOUETTE_TAG: f"{silhouette:.6f}",
        MIN_SHARE_TAG: f"{min(segment_shares):.6f}",
        "gate.decision": decision.label,
        "gate.reason": decision.reason,
        "gate.silhouette_tolerance": f"{policy.silhouette_tolerance:g}",
        "gate.min_segment_share": f"{policy.min_segment_share:g}",
        "gate.compared_with": decision.champion_version or "none",
    }
    registered = _quietly(mlflow.register_model, model_uri, model_name, tags=version_tags)
    version = str(registered.version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return version, decision


# Lines register_model prints on every success (the first registration of a model, or
# "Registered model 'x' already exists. Creating a new version of this model..." on every
# later one); the job's summary already says which version was registered and what the gate
# decided.
_REGISTRATION_CHATTER = re.compile(
    r"(Successfully registered model|Created version"
    r"|Registered model .* already exists\. Creating a new version of this model)"
)


def _quietly(call, *args, **kwargs):
    """``call(*args, **kwargs)`` with MLflow's registration chatter dropped from stderr; any
    other line it prints (a warning, an error) is passed on."""
    import contextlib
    import io
    import sys

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return call(*args, **kwargs)
    finally:
        for line in captured.getvalue().splitlines(keepends=True):
            if not _REGISTRATION_CHATTER.match(line):
                sys.stderr.write(line)
