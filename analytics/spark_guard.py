"""Read-only SQL on the Spark engine: a query runs only when Spark's own parser makes it a read of the
run's views, checked on the parsed plan before Spark analyses or runs anything (``spark.sql`` runs a
command, e.g. ``INSERT OVERWRITE DIRECTORY``, at once).

:func:`check_read_only` walks the whole parsed plan (``LogicalPlan.toJSON``: every node, every expression,
every subquery's plan) and refuses, with ``ValueError``, anything outside this list:

- plan nodes of a query (``Project``, ``Filter``, ``Aggregate``, ``Join``, ``Sort``, limits, set operations,
  ``WITH``, windows, generators, hints, inline tables, ``EXPLAIN`` of such a plan): no command, no DDL or
  DML, no ``SET``, no ``CACHE``/``REFRESH``, no ``EXECUTE IMMEDIATE``;
- relations named by one plain name: a view of the run (:data:`tdlog.analytics.engine.VIEWS`,
  ``RESULT_VIEWS``) or a CTE of the query; never a table of the catalog, never a file (``parquet.`/path```);
- table-valued functions that compute rows (``range``, ``explode``, ``inline``, ``stack``, ...), never one
  that reads files (``read_files``);
- no reflection (``java_method``, ``reflect``, ``try_reflect``).

Behind it, the engine's session has ``spark.sql.runSQLOnFiles = false``: a file named as a table is not
read even by a query that got through.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .engine import RESULT_VIEWS, VIEWS

_LOGICAL = "org.apache.spark.sql.catalyst.plans.logical."
_ANALYSIS = "org.apache.spark.sql.catalyst.analysis."
_EXPRESSIONS = "org.apache.spark.sql.catalyst.expressions."
QUERY_NODES = frozenset({
    _LOGICAL + name for name in (
        "Project", "Filter", "Aggregate", "Sort", "GlobalLimit", "LocalLimit", "Offset", "Tail", "Join",
        "LateralJoin", "SubqueryAlias", "UnresolvedWith", "WithCTE", "CTERelationDef", "CTERelationRef",
        "Union", "Intersect", "Except", "Distinct", "Deduplicate", "Window", "WithWindowDefinition",
        "Generate", "OneRowRelation", "Pivot", "Unpivot", "Sample", "Repartition", "RepartitionByExpression",
        "RebalancePartitions", "UnresolvedHint", "Expand", "LocalRelation", "Range", "Subquery")
} | {
    _ANALYSIS + name for name in (
        "UnresolvedRelation", "UnresolvedTableValuedFunction", "UnresolvedTVFAliases", "UnresolvedInlineTable",
        "UnresolvedSubqueryColumnAliases", "UnresolvedHaving", "UnresolvedAttribute", "UnresolvedFunction",
        "UnresolvedGenerator", "UnresolvedStar", "UnresolvedAlias", "UnresolvedRegex", "UnresolvedExtractValue",
        "UnresolvedOrdinal", "UnresolvedNamedLambdaVariable", "NamedParameter", "PosParameter",
        "UnresolvedStarExceptOrReplace", "UnresolvedStarExcept")
} | {"org.apache.spark.sql.execution.command.ExplainCommand"})
ROW_FUNCTIONS = frozenset({"range", "explode", "explode_outer", "inline", "inline_outer", "posexplode",
                           "posexplode_outer", "stack", "json_tuple"})
REFLECTION = frozenset({"java_method", "reflect", "try_reflect"})
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_read_only(session: Any, query: str) -> None:
    """Raise ``ValueError`` unless ``query`` (Spark SQL, ``:name`` markers) is one read of the run's views
    (see the module); parses, never analyses or runs."""
    parser = session._jsparkSession.sessionState().sqlParser()
    try:
        plan = json.loads(parser.parsePlan(query).toJSON())
    except Exception as error:  # py4j wraps Spark's ParseException
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"query: Spark cannot parse it: {first}") from None
    nodes = list(_nodes(plan))
    ctes = {cte["_1"] for node in nodes if node["class"].endswith(".UnresolvedWith")
            for cte in node.get("cteRelations", []) if isinstance(cte, dict) and _PLAIN_NAME.match(str(cte.get("_1")))}
    readable = {f"[{name}]" for name in (*VIEWS, *RESULT_VIEWS, *ctes)}
    for node in nodes:
        kind = node["class"]
        if not (kind in QUERY_NODES or kind.startswith(_EXPRESSIONS)):
            raise _refused(f"{kind.rsplit('.', 1)[-1]} (not a read)")
        name = kind.rsplit(".", 1)[-1]
        if name == "UnresolvedRelation" and node.get("multipartIdentifier") not in readable:
            raise _refused(f"a read of {node.get('multipartIdentifier')} (only the run's views {list(VIEWS)} "
                           f"and the query's own CTEs are readable)")
        if name in ("UnresolvedTableValuedFunction", "UnresolvedTVFAliases") \
                and _last_name(node.get("name")) not in ROW_FUNCTIONS:
            raise _refused(f"the table function {node.get('name')}")
        if name in ("UnresolvedFunction", "UnresolvedGenerator") and _last_name(
                node.get("nameParts", node.get("name"))) in REFLECTION:
            raise _refused(f"{node.get('nameParts', node.get('name'))} (Java reflection)")


def _refused(what: str) -> ValueError:
    return ValueError(f"query: expected one read-only query over the run's views, got {what}; "
                      f"the engine never writes")


def _last_name(parts: Any) -> str:
    """``"[system, builtin, java_method]"`` -> ``"java_method"``."""
    return str(parts).strip("[]").rsplit(",", 1)[-1].strip().strip("`").lower()


def _nodes(tree: Any):
    """Every object with a ``class`` in ``tree`` (a plan's JSON), at any depth."""
    if isinstance(tree, dict):
        if "class" in tree:
            yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)
