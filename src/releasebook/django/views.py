"""/healthz answers whether the process is alive; /readyz whether it should get traffic."""

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .checks import readiness_checks
from .maintenance import PROBE_HEADER, in_maintenance, retry_after
from .release import current_release
from .runner import run_checks
from .static_sample import static_sample

logger = logging.getLogger(__name__)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "release": current_release().release_id})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    release = current_release()
    maintenance = in_maintenance()
    if maintenance and not request.headers.get(PROBE_HEADER):
        response = JsonResponse(
            {"status": "maintenance", "release": release.release_id, "git_sha": release.git_sha},
            status=503,
        )
        response["Retry-After"] = str(retry_after())
        return response
    results = run_checks(readiness_checks())
    ok = all(result.ok for result in results)
    if not ok:
        failed = "; ".join(f"{r.name}: {r.message}" for r in results if not r.ok)
        logger.warning("not ready: %s", failed)
    body: dict[str, object] = {
        "status": "ok" if ok else "fail",
        "release": release.release_id,
        "git_sha": release.git_sha,
        "checks": {result.name: result.probe_body() for result in results},
        "static": static_sample(),
    }
    if maintenance:
        body["maintenance"] = True
    return JsonResponse(body, status=200 if ok else 503)
