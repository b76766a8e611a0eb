"""Processing analytics from the library's `jobs` table, in the design's shape:
{jobs: {total, success, failed, ...}, performance: {averageTime, queue},
 errors: {types, frequency, impact}}.

`frequency` is each error code's share of the finished jobs; `impact` the number of media
items with a failed job. `averageTime` is seconds from start to completion of completed jobs
(their last attempt). Optionally limited to one organization's media and to jobs created in
[since, until).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, true

from ..library import schema
from ..library.repository import Library


async def processing_analytics(library: Library, *, organization_id: str | None = None,
                               since: float | None = None,
                               until: float | None = None) -> dict[str, Any]:
    j, m = schema.jobs, schema.media
    scope = []
    if organization_id is not None:
        scope.append(m.c.organization_id == organization_id)
    if since is not None:
        scope.append(j.c.created_at >= since)
    if until is not None:
        scope.append(j.c.created_at < until)
    source = j.join(m, m.c.id == j.c.media_id)
    where = and_(true(), *scope)
    async with library.engine.connect() as conn:
        by_status = dict((await conn.execute(
            select(j.c.status, func.count()).select_from(source).where(where)
            .group_by(j.c.status))).all())
        average = (await conn.execute(
            select(func.avg(j.c.completed_at - j.c.started_at)).select_from(source)
            .where(where, j.c.status == "completed", j.c.started_at.is_not(None),
                   j.c.completed_at.is_not(None)))).scalar()
        failures = (await conn.execute(
            select(j.c.error, j.c.media_id).select_from(source)
            .where(where, j.c.status == "failed"))).all()
    types: dict[str, int] = {}
    for error, _ in failures:
        code = error.get("code") if isinstance(error, dict) else None
        types[str(code or "unknown")] = types.get(str(code or "unknown"), 0) + 1
    counts = {s: int(by_status.get(s, 0)) for s in ("queued", "running", "completed",
                                                    "failed", "cancelled")}
    finished = counts["completed"] + counts["failed"] + counts["cancelled"]
    return {
        "jobs": {"total": sum(int(n) for n in by_status.values()),
                 "success": counts["completed"], "failed": counts["failed"],
                 "cancelled": counts["cancelled"], "running": counts["running"],
                 "queued": counts["queued"]},
        "performance": {"averageTime": round(float(average), 3) if average is not None
                        else None, "queue": counts["queued"]},
        "errors": {
            "types": dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))),
            "frequency": {code: round(n / finished, 4) for code, n in types.items()}
            if finished else {},
            "impact": len({media_id for _, media_id in failures}),
        },
    }
