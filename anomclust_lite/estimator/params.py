"""The parameters of :class:`~anomclust_lite.estimator.clusterer.AnomalyClusterer`: their choices and validation.

The estimator's ``__init__`` stores what it is given; :func:`validate_params`
checks it all at once (in ``fit``, ``assign`` and ``save``) and returns the
typed values as a :class:`Params`, which the fitting and assigning code reads.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..clustering.dispatch import METHODS
from ..core.coreset import coreset_size
from ..core.defaults import BAG_DTYPES
from ..core.pipeline import effective_tau
from ..core.weights import Tau, check_tau
from ..core.projection import projection_rank
from ..core.scores import AGGREGATES
from ..core.anomaly import DEFAULT_RATE, check_rate
from ..core.validation import check_choice, check_int, check_memory_mb, check_n_threads, check_positive_float

__all__ = ["WEIGHT_MODES", "DISTANCES", "GOOD_GROUPS", "CONSENSUS_MODES", "DEFAULT_RATE", "DEFAULT_REFERENCE_SIZE", "Params", "validate_params"]

#: How patch weights are made (see :class:`~anomclust_lite.estimator.clusterer.AnomalyClusterer`).
WEIGHT_MODES = ("unsupervised", "semi", "uniform", "topk")
#: Image distances: Euclidean between WA embeddings, or a Hausdorff-family bag distance.
DISTANCES = ("wa", "hausdorff-max-min", "hausdorff-mean-min", "hausdorff-min-min", "hausdorff-mean-mean")
#: ``"off"``: every image is clustered (the paper's protocol); ``"auto"``: with labelled normal images,
#: the likely-good images are set apart (label -1) and K counts the defect clusters only.
GOOD_GROUPS = ("off", "auto")
#: ``"auto"``: consensus Ward wherever it applies (:attr:`Params.consensus_applies`); ``"off"``: one Ward tree.
CONSENSUS_MODES = ("auto", "off")
#: Images (or images' worth of normal patches) stored for assigning new images.
DEFAULT_REFERENCE_SIZE = 64


@dataclass(frozen=True)
class Params:
    """Validated estimator parameters (field names and meaning as in the estimator's ``__init__``)."""

    k: Optional[int]
    weights: str
    tau: Optional[Tau]
    aggregate: str
    q: float
    topk: Optional[int]
    distance: str
    hausdorff_outer: str
    method: str
    k_max: int
    memory_mb: float
    n_threads: Optional[int]
    seed: int
    reference_size: int
    new_type_threshold: Optional[float]
    bag_dtype: str
    good_group: str
    good_rate: float
    new_type_rate: float
    bank_size: Any
    score_reference: int
    subsample_from: int
    fit_size: int
    exact: bool
    project_out: Any
    consensus: str

    @property
    def effective_tau(self) -> Optional[Tau]:
        """The temperature used: ``tau``, or its default for the weight mode (``None`` for uniform top-k)."""
        return effective_tau(self.weights, self.tau)

    @property
    def consensus_possible(self) -> bool:
        """Whether consensus Ward can combine several Ward trees here: Ward on softmax-weighted WA embeddings."""
        return self.method == "ward" and self.distance == "wa" and self.weights in ("unsupervised", "semi")

    @property
    def consensus_applies(self) -> bool:
        """Whether the fit combines several Ward trees: ``consensus="auto"`` where :attr:`consensus_possible`."""
        return self.consensus == "auto" and self.consensus_possible

    @property
    def hausdorff_inner(self) -> str:
        """The inner reduction of a ``hausdorff-<inner>`` distance (``""`` for ``"wa"``)."""
        return self.distance[len("hausdorff-"):] if self.distance != "wa" else ""

    def topk_for(self, m: int) -> int:
        """Patches kept by ``weights="topk"`` for bags of ``m`` patches (default a tenth)."""
        k = self.topk if self.topk is not None else max(1, m // 10)
        if k > m:
            raise ValueError(f"topk={k} exceeds the {m} patches per image; choose topk <= {m}")
        return k

    def projection_rank(self, dim: int) -> int:
        """Directions removed from ``dim``-dimensional embeddings (:func:`~anomclust_lite.core.projection.projection_rank`)."""
        return projection_rank(self.project_out, dim)

    def saved(self) -> Dict[str, Any]:
        """The model's parameters as JSON-ready values (``n_threads``, a machine setting, left out)."""
        values = asdict(self)
        del values["n_threads"]
        return values


def _optional(check: Any, value: Any, name: str, **kwargs: Any) -> Any:
    return None if value is None else check(value, name, **kwargs)


def validate_params(values: Mapping[str, Any]) -> Params:
    """Check every estimator parameter, in signature order; raise ``ValueError`` naming the first bad one.

    ``values`` maps every ``__init__`` parameter name to its stored value.
    """
    v = dict(values)
    k = _optional(check_int, v["k"], "k", low=1)
    weights = check_choice(v["weights"], "weights", WEIGHT_MODES)
    tau = _optional(check_tau, v["tau"], "tau")
    aggregate = check_choice(v["aggregate"], "aggregate", AGGREGATES)
    q = check_positive_float(v["q"], "q")
    if q > 1:
        raise ValueError(f"q must be in (0, 1]; got {v['q']!r}")
    topk = _optional(check_int, v["topk"], "topk", low=1)
    distance = check_choice(v["distance"], "distance", DISTANCES)
    hausdorff_outer = check_choice(v["hausdorff_outer"], "hausdorff_outer", ("max", "mean"))
    method = check_choice(v["method"], "method", METHODS)
    if method in ("kmeans", "gmm") and distance != "wa":
        raise ValueError(
            f"method={v['method']!r} needs coordinates, which only distance='wa' gives; "
            "use a hierarchical method, 'spectral' or 'kmedoids' with Hausdorff distances"
        )
    return Params(
        k=k, weights=weights, tau=tau, aggregate=aggregate, q=q, topk=topk, distance=distance,
        hausdorff_outer=hausdorff_outer, method=method,
        k_max=check_int(v["k_max"], "k_max", low=2),
        memory_mb=check_memory_mb(v["memory_mb"]),
        n_threads=check_n_threads(v["n_threads"]),
        seed=check_int(v["seed"], "seed", low=0),
        reference_size=check_int(v["reference_size"], "reference_size", low=1),
        new_type_threshold=_optional(check_positive_float, v["new_type_threshold"], "new_type_threshold"),
        bag_dtype=check_choice(v["bag_dtype"], "bag_dtype", BAG_DTYPES),
        good_group=check_choice(v["good_group"], "good_group", GOOD_GROUPS),
        good_rate=check_rate(v["good_rate"], "good_rate"),
        new_type_rate=check_rate(v["new_type_rate"], "new_type_rate"),
        bank_size=_bank_size(v["bank_size"]),
        score_reference=check_int(v["score_reference"], "score_reference", low=2),
        subsample_from=check_int(v["subsample_from"], "subsample_from", low=3),
        fit_size=check_int(v["fit_size"], "fit_size", low=2),
        exact=_flag(v["exact"], "exact"),
        project_out=_project_out(v["project_out"]),
        consensus=check_choice(v["consensus"], "consensus", CONSENSUS_MODES),
    )


def _bank_size(value: Any) -> Any:
    """``bank_size`` as an int (patches) or a float fraction in (0, 1]."""
    coreset_size(value, 1)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _project_out(value: Any) -> Any:
    """``project_out`` as ``"auto"`` or an int >= 0."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"project_out must be 'auto' or an integer >= 0; got {value!r}")
        return value
    return check_int(value, "project_out", low=0)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)
