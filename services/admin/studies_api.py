"""``/api/patients``, ``/api/studies``, ``/api/jobs``: browse, download, send, delete.

Viewers browse and download; operators send; administrators delete. Every UID in a
path is checked (PS3.5 9.1) before it reaches a query or a key.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from micropacs.auth.principal import Principal
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicomweb.responses import ROOT
from services.admin.access import OPERATOR, VIEWER, audit, context_of
from services.admin.archive import zipped
from services.admin.browse import Browser, Page
from services.admin.jobs import SendJob, TooManyJobs

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
Offset = Annotated[int, Query(ge=0, le=100_000, description="Items skipped.")]
Text = Annotated[str | None, Query(max_length=64)]
Date = Annotated[str | None, Query(pattern=r"^\d{8}$", description="YYYYMMDD")]


def checked_uid(value: str, what: str = "UID") -> str:
    """``value`` if it is a UID (PS3.5 9.1: digits and dots, at most 64), else 400."""
    if not is_valid_uid(value):
        raise HTTPException(400, f"the {what} is not a UID (digits and dots, at most 64)")
    return value


class PageView(BaseModel):
    """One page of a listing."""

    items: list[dict[str, Any]]
    total: int = Field(description="Matches in all (up to MICROPACS_QUERY__MAX_RESULTS).")
    limit: int
    offset: int


class StudyView(BaseModel):
    """A study with its series, each with its instance count and thumbnail."""

    study: dict[str, Any]
    series: list[dict[str, Any]]


class SendBody(BaseModel):
    """Where to send a study (or one of its series)."""

    destination: str = Field(min_length=1, max_length=16, description="A known node's AE title.")
    series_uid: str = Field("", max_length=64, description="Only this series (default: all).")


class JobView(BaseModel):
    """A send job's progress, and each instance's result once sent."""

    id: str
    destination: str
    study_uid: str
    series_uid: str
    state: str
    total: int
    sent: int
    failed: int
    reason: str
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, job: SendJob, results: bool = True) -> JobView:
        """The view of ``job`` (without per-instance results when ``results`` is False)."""
        return cls(
            id=job.job_id,
            destination=job.destination,
            study_uid=job.study_uid,
            series_uid=job.series_uid,
            state=job.state.value,
            total=job.total,
            sent=job.sent,
            failed=job.failed,
            reason=job.reason,
            results=[asdict(r) for r in job.results] if results else [],
        )


def _params(**given: str | None) -> list[tuple[str, str]]:
    return [(keyword, value) for keyword, value in given.items() if value]


def _page(page: Page) -> PageView:
    return PageView(items=page.items, total=page.total, limit=page.limit, offset=page.offset)


def thumbnail_base(request: Request) -> str:
    """Where the qr service's DICOMweb is: configured, else this origin's ``/dicom-web``."""
    return context_of(request).settings.admin.dicomweb_url.rstrip("/") or ROOT


def router() -> APIRouter:
    """The browse, download, send and job routes."""
    routes = APIRouter(tags=["studies"])

    def browser(request: Request) -> Browser:
        return Browser(context_of(request).query)

    @routes.get("/patients", response_model=PageView)
    async def list_patients(
        request: Request,
        who: Annotated[Principal, Depends(VIEWER)],
        patient_name: Text = None,
        patient_id: Text = None,
        birth_date: Date = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> PageView:
        """Patients by name (wildcards * and ?), ID or birth date."""
        params = _params(
            PatientName=patient_name, PatientID=patient_id, PatientBirthDate=birth_date
        )
        found = await browser(request).patients(params, limit, offset)
        await audit(request, who, "query", f"patients searched: {found.total} matches")
        return _page(found)

    @routes.get("/studies", response_model=PageView)
    async def list_studies(
        request: Request,
        who: Annotated[Principal, Depends(VIEWER)],
        patient_name: Text = None,
        patient_id: Text = None,
        birth_date: Date = None,
        accession: Text = None,
        date_from: Date = None,
        date_to: Date = None,
        modality: Annotated[str | None, Query(pattern=r"^[A-Z0-9 _]{1,16}$")] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> PageView:
        """Studies matching every given filter (C-FIND matching: wildcards in names and
        IDs, a study date range), newest first."""
        dates = f"{date_from or ''}-{date_to or ''}" if date_from or date_to else None
        params = _params(
            PatientName=patient_name,
            PatientID=patient_id,
            PatientBirthDate=birth_date,
            AccessionNumber=accession,
            StudyDate=dates,
            ModalitiesInStudy=modality,
        )
        found = await browser(request).studies(params, limit, offset)
        await audit(
            request,
            who,
            "query",
            f"studies searched: {found.total} matches",
            study_uids=found.study_uids(),
        )
        return _page(found)

    @routes.get("/studies/{study_uid}", response_model=StudyView)
    async def show_study(
        request: Request, study_uid: str, who: Annotated[Principal, Depends(VIEWER)]
    ) -> StudyView:
        """A study and its series, each with a thumbnail URL (the qr service's WADO-RS)."""
        checked_uid(study_uid, "study UID")
        found = await browser(request).studies([("StudyInstanceUID", study_uid)], 1, 0)
        if not found.items:
            raise HTTPException(404, "no such study in the archive")
        series = await browser(request).series(study_uid)
        await audit(request, who, "retrieve", "study viewed", study_uids=[study_uid])
        base = thumbnail_base(request)
        for each in series:
            each["thumbnail"] = (
                f"{base}/studies/{study_uid}/series/{each['SeriesInstanceUID']}/thumbnail"
            )
        return StudyView(study=found.items[0], series=series)

    @routes.get("/studies/{study_uid}/series/{series_uid}/instances")
    async def list_instances(
        request: Request,
        study_uid: str,
        series_uid: str,
        who: Annotated[Principal, Depends(VIEWER)],
    ) -> list[dict[str, Any]]:
        """The instances of a series, by instance number."""
        checked_uid(study_uid, "study UID")
        checked_uid(series_uid, "series UID")
        found = await browser(request).instances(study_uid, series_uid)
        if not found:
            raise HTTPException(404, "no such series in the archive")
        await audit(request, who, "query", "a series' instances listed", study_uids=[study_uid])
        return found

    @routes.get("/studies/{study_uid}/archive", response_class=StreamingResponse)
    async def download_study(
        request: Request, study_uid: str, who: Annotated[Principal, Depends(VIEWER)]
    ) -> StreamingResponse:
        """The study as a ZIP of its Part 10 files (``study/series/instance.dcm``), streamed."""
        checked_uid(study_uid, "study UID")
        context = context_of(request)
        instances = await context.catalog.locate(study_uids=[study_uid])
        if not instances:
            raise HTTPException(404, "no such study in the archive")
        await audit(request, who, "retrieve", "study downloaded as ZIP", study_uids=[study_uid])
        return StreamingResponse(
            zipped(context.blobs, instances),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{study_uid}.zip"'},
        )

    @routes.post("/studies/{study_uid}/send", status_code=202, response_model=JobView)
    async def send_study(
        request: Request,
        study_uid: str,
        body: SendBody,
        who: Annotated[Principal, Depends(OPERATOR)],
    ) -> JobView:
        """Send the study (or one series) to a node by C-STORE, as a job (``/api/jobs/{id}``)."""
        checked_uid(study_uid, "study UID")
        if body.series_uid:
            checked_uid(body.series_uid, "series UID")
        context = context_of(request)
        nodes = {node.ae_title: node for node in await context.catalog.nodes()}
        node = nodes.get(body.destination.strip(" "))
        if node is None:
            raise HTTPException(404, f"no node {body.destination!r}; add it under /api/nodes")
        instances = await context.sender.instances(study_uid, body.series_uid)
        if not instances:
            raise HTTPException(404, "no such study or series in the archive")
        try:
            job = context.jobs.new(node.ae_title, study_uid, body.series_uid, who.name)
        except TooManyJobs as exc:
            raise HTTPException(503, str(exc)) from None
        context.sender.start(job, node, instances)
        await audit(
            request,
            who,
            "study-sent",
            f"send job {job.job_id}: {len(instances)} instances",
            destination=node.ae_title,
            study_uids=[study_uid],
        )
        return JobView.of(job)

    @routes.get("/jobs", response_model=list[JobView])
    async def list_jobs(
        request: Request, _: Annotated[Principal, Depends(VIEWER)]
    ) -> list[JobView]:
        """The send jobs kept, newest first (without per-instance results)."""
        return [JobView.of(job, results=False) for job in context_of(request).jobs.all()]

    @routes.get("/jobs/{job_id}", response_model=JobView)
    async def show_job(
        request: Request, job_id: str, _: Annotated[Principal, Depends(VIEWER)]
    ) -> JobView:
        """A send job's progress: sent, failed, total, state, and each instance's result."""
        job = context_of(request).jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job (jobs are kept in memory, the newest only)")
        return JobView.of(job)

    return routes
