"""The Studies, Study and series preview pages, and sending a study with its progress."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.auth.principal import Role
from micropacs.deletion import DeletionTarget, request_deletion
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicomweb.responses import ROOT
from micropacs.errors import InvalidUid, NotFound, Unavailable
from services.admin.api import PREFIX as API
from services.admin.browse import Browser
from services.admin.jobs import SendJob, TooManyJobs
from services.admin.web.access import may, require
from services.admin.web.forms import form_of
from services.admin.web.site import Site, guarded, see_other
from services.admin.web.views import PAGE_SIZE, SeriesRow, StudyFilters, StudyRow


def checked_uid(text: str, what: str) -> str:
    """A UID from a URL, refused unless it is one (PS3.5 9.1)."""
    if not is_valid_uid(text):
        raise InvalidUid(f"the {what} in the address is not a UID")
    return text


class Browse:
    """Finding studies and looking at them, through the listings the REST API uses."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.browser = Browser(site.context.query)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/studies", self.studies, methods=["GET"]),
            Route("/studies/{study}", self.study, methods=["GET"]),
            Route("/studies/{study}/series/{series}", self.series, methods=["GET"]),
            Route("/studies/{study}/send", self.send, methods=["POST"]),
            Route("/studies/{study}/delete", self.confirm_delete, methods=["GET"]),
            Route("/studies/{study}/delete", self.delete, methods=["POST"]),
            Route("/jobs/{job}", self.job, methods=["GET"]),
        ]

    @property
    def dicomweb(self) -> str:
        """Where the qr service's DICOMweb is: configured, else this origin's."""
        return self.site.context.settings.admin.dicomweb_url.rstrip("/") or ROOT

    @guarded
    async def studies(self, request: Request) -> Response:
        filters = StudyFilters.of(request.query_params)
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        found = await self.browser.studies(filters.params(), PAGE_SIZE, offset)
        await self.site.record(
            request,
            "query",
            f"studies searched: {found.total} matches",
            study_uids=tuple(found.study_uids()),
        )
        shown = [StudyRow.of(each) for each in found.items]
        page = {
            "first": offset + 1 if shown else 0,
            "last": offset + len(shown),
            "previous": filters.query_string(max(0, offset - PAGE_SIZE)) if offset else "",
            "next": filters.query_string(offset + PAGE_SIZE)
            if offset + PAGE_SIZE < found.total
            else "",
        }
        deleted = request.query_params.get("deleted", "")
        notice = (
            f"Study deletion requested: its {deleted} instances are being removed."
            if deleted.isdigit()
            else ""
        )
        return self.site.page(
            request,
            "studies.html",
            title="Studies",
            filters=filters,
            studies=shown,
            page=page,
            notice=notice,
        )

    async def one_study(self, study_uid: str) -> StudyRow:
        """The study of that UID with its series; NotFound when the archive has none."""
        found = await self.browser.studies([("StudyInstanceUID", study_uid)], 1, 0)
        if not found.items:
            raise NotFound("no such study in the archive (deleted, or not stored yet)")
        study = StudyRow.of(found.items[0])
        series = await self.browser.series(study_uid)
        study.series.extend(SeriesRow.of(each, study_uid, self.dicomweb) for each in series)
        return study

    @guarded
    async def study(self, request: Request) -> Response:
        study_uid = checked_uid(request.path_params["study"], "Study Instance UID")
        study = await self.one_study(study_uid)
        await self.site.record(request, "retrieve", "study viewed", study_uids=(study_uid,))
        nodes = await self.site.context.catalog.nodes() if may(request, Role.OPERATOR) else []
        return self.site.page(
            request,
            "study.html",
            title=study.patient_name or "Study",
            study=study,
            nodes=sorted(nodes, key=lambda node: node.ae_title),
            can_send=may(request, Role.OPERATOR),
            can_delete=may(request, Role.ADMINISTRATOR),
            download_url=f"{API}/studies/{study_uid}/archive",
            viewer_url=self.viewer_url(study_uid),
        )

    def viewer_url(self, study_uid: str) -> str:
        """The configured viewer's URL of the study ("" when none is configured)."""
        template = self.site.context.settings.admin.viewer_url
        return template.replace("{study_uid}", quote(study_uid, safe="")) if template else ""

    @guarded
    async def series(self, request: Request) -> Response:
        study_uid = checked_uid(request.path_params["study"], "Study Instance UID")
        series_uid = checked_uid(request.path_params["series"], "Series Instance UID")
        listed = [
            each
            for each in await self.browser.series(study_uid)
            if each.get("SeriesInstanceUID") == series_uid
        ]
        if not listed:
            raise NotFound("no such series in the archive (deleted, or not stored yet)")
        await self.site.record(request, "retrieve", "series previewed", study_uids=(study_uid,))
        series = SeriesRow.of(listed[0], study_uid, self.dicomweb)
        base = f"{self.dicomweb}/studies/{study_uid}/series/{series_uid}/instances"
        frames = [
            {
                "url": f"{base}/{each.get('SOPInstanceUID')}/rendered",
                "number": each.get("InstanceNumber"),
            }
            for each in await self.browser.instances(study_uid, series_uid)
        ]
        return self.site.page(
            request,
            "series.html",
            title=f"Series {series.number} {series.description}".strip(),
            study_uid=study_uid,
            series=series,
            frames=frames,
        )

    @guarded
    async def confirm_delete(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        study_uid = checked_uid(request.path_params["study"], "Study Instance UID")
        study = await self.one_study(study_uid)
        return self.site.page(
            request, "confirm_delete.html", title="Delete this study?", study=study
        )

    @guarded
    async def delete(self, request: Request) -> Response:
        principal = require(request, Role.ADMINISTRATOR)
        study_uid = checked_uid(request.path_params["study"], "Study Instance UID")
        reason = (await form_of(request)).get("reason", "")
        context = self.site.context
        receipt = await request_deletion(
            context.bus, context.catalog, DeletionTarget(study_uid), principal.name, reason
        )
        context.metrics.deletions.labels(level="study").inc()
        await self.site.record(
            request,
            "study-deleted",
            f"deletion {receipt.deletion_id} of {receipt.instances} instances requested",
            study_uids=(study_uid,),
        )
        return see_other(f"/studies?deleted={receipt.instances}")

    @guarded
    async def send(self, request: Request) -> Response:
        principal = require(request, Role.OPERATOR)
        study_uid = checked_uid(request.path_params["study"], "Study Instance UID")
        form = await form_of(request)
        context = self.site.context
        ae_title = form.get("node", "")
        node = next((n for n in await context.catalog.nodes() if n.ae_title == ae_title), None)
        if node is None:
            raise NotFound(f"no node {ae_title!r}: add it on the Nodes page first")
        instances = await context.sender.instances(study_uid, "")
        if not instances:
            raise NotFound("no such study in the archive (deleted, or not stored yet)")
        try:
            job = context.jobs.new(node.ae_title, study_uid, "", principal.name)
        except TooManyJobs as exc:
            raise Unavailable(str(exc)) from None
        context.sender.start(job, node, instances)
        await self.site.record(
            request,
            "study-sent",
            f"send job {job.job_id} started: {len(instances)} instances",
            destination=node.ae_title,
            study_uids=(study_uid,),
        )
        if request.headers.get("hx-request") == "true":
            return self.site.page(request, "job_progress.html", job=shown_job(job))
        return see_other(f"/jobs/{job.job_id}")

    @guarded
    async def job(self, request: Request) -> Response:
        job = self.site.context.jobs.get(request.path_params["job"])
        if job is None:
            raise NotFound("no such send job (jobs are kept in memory until restart)")
        template = (
            "job_progress.html" if request.headers.get("hx-request") == "true" else "job.html"
        )
        return self.site.page(request, template, title="Send job", job=shown_job(job))


def shown_job(job: SendJob) -> dict[str, object]:
    """A send job as its progress bar shows it."""
    return {
        "id": job.job_id,
        "destination": job.destination,
        "state": job.state.value,
        "done": job.state.finished,
        "total": job.total,
        "sent": job.sent,
        "failed": job.failed,
        "error": job.reason if job.state.finished and job.failed else "",
    }
