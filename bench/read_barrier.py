"""The read barrier (read-your-writes) measured: what it costs a query when the index is
caught up, and what a query issued right after a large store waits.

1. Caught up: two qr processes on the same stores and topics, one with the barrier
   (``MICROPACS_READ_BARRIER__TIMEOUT=2``) and one without (``=0``). A 20-instance
   study is stored, then ``--queries`` C-FINDs of each kind (study level by PatientID,
   image level of the study) go to both over one persistent association each, alternating
   between them so noise hits both alike: median and p95 of each and their difference,
   the barrier's cost; the barrier's outcomes and readings from its server's /metrics.
2. Right after a store: storescu sends ``--instances`` small CT instances in one
   association while a querier issues image-level C-FINDs of that study back to back to
   the barrier's server, and once more after storescu exits. Each query is checked
   against the instances storescu had seen acknowledged before it was sent (``-v``
   output, read as it comes, so a lower bound): a query that finds fewer is a read that
   missed its writes (target 0). Reported: the first query after storescu exits (it must
   find every instance), also over the same query once caught up (``--caught-up-queries``
   more to each server); every query's latency minus the caught-up median of part 1
   (with the barrier, image level of 20 instances: queries of a study still growing
   return fewer, so this can be negative); the barrier's own time and how often it
   reached its bound (``outcome="timeout"``, target 0) from /metrics. ``--runs`` times,
   each with a fresh study.

On the stack (default) the services run as processes (ingest, index, two qr) on Kafka,
MinIO and FerretDB; embedded, ``micropacs serve`` (with the barrier) and ``micropacs run
qr`` (without) share the SQLite stores and the files of one data directory.

    python -m bench.read_barrier [--backend stack|embedded] [--queries 300]
        [--instances 1000] [--runs 3] [--caught-up-queries 10] [--reuse-stack]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydicom import Dataset, dcmread
from pynetdicom.association import Association
from tqdm import tqdm

from bench.common import (
    DCMTK_ENV,
    STUDY_ROOT_FIND,
    find_association,
    free_port,
    save,
    start_serve,
    stop,
    summary_ms,
)
from bench.stack_pipeline import service, stack_env
from bench.store_throughput import send
from services.qr.read_scope import READER
from stack import servers
from tests import dicomdata

PENDING = 0xFF00  # PS3.4 C.4.1.1.4: a match follows
SUCCESS = re.compile(r"Received Store Response \(Success\)")
FAILURE = re.compile(r"Received Store Response \((?!Success)")
CAUGHT_UP_STUDY = 20
ROWS = COLS = 64


@dataclass
class Deployment:
    """Where the servers of one measurement listen."""

    store_port: int
    """The C-STORE SCP (ingest, or serve)."""
    barrier_port: int
    barrier_http: int
    """The qr with the barrier, whose /metrics is read."""
    plain_port: int
    """The qr without it."""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextmanager
def on_stack(stack: servers.Stack, work: Path) -> Iterator[Deployment]:
    """ingest, index and two qr processes, on topics, a bucket and a catalog of their own."""
    run = f"barrier-{uuid.uuid4().hex[:8]}"
    env = stack_env(stack, run)
    data = work / run
    ports = {name: free_port() for name in ("ingest", "barrier", "plain", "barrier_http")}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for folder in ("", "barrier", "plain"):
            (data / folder).mkdir(exist_ok=True)
        processes.append(service("ingest", env, data, ports["ingest"], free_port()))
        processes.append(service("index", env, data, None, free_port()))
        with_barrier = {**env, "MICROPACS_READ_BARRIER__TIMEOUT": "2"}
        processes.append(
            service("qr", with_barrier, data / "barrier", ports["barrier"], ports["barrier_http"])
        )
        without = {**env, "MICROPACS_READ_BARRIER__TIMEOUT": "0"}
        processes.append(service("qr", without, data / "plain", ports["plain"], free_port()))
        yield Deployment(
            ports["ingest"], ports["barrier"], ports["barrier_http"], ports["plain"], processes
        )
    finally:
        for process in processes:
            stop(process)


@contextmanager
def embedded(work: Path) -> Iterator[Deployment]:
    """``micropacs serve`` with the barrier and ``micropacs run qr`` without, on its stores."""
    data = work / "embedded" / "data"
    data.mkdir(parents=True)
    stores = {
        "MICROPACS_STORAGE__BLOB_URL": f"file://{data.resolve() / 'objects'}",
        "MICROPACS_STORAGE__BUS_URL": f"sqlite://{data.resolve() / 'events.db'}",
        "MICROPACS_STORAGE__CATALOG_URL": f"sqlite://{data.resolve() / 'catalog.db'}",
    }
    port, http = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            start_serve(
                data,
                port,
                http,
                {
                    **stores,
                    "MICROPACS_READ_BARRIER__TIMEOUT": "2",
                    "MICROPACS_WORKLIST__HL7_PORT": "0",
                },
            )
        )
        plain = work / "embedded" / "plain"
        plain.mkdir()
        plain_port = free_port()
        without = {**stores, "MICROPACS_READ_BARRIER__TIMEOUT": "0"}
        processes.append(service("qr", without, plain, plain_port, free_port()))
        yield Deployment(port, port, http, plain_port, processes)
    finally:
        for process in processes:
            stop(process)


def identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def find(assoc: Association, query: Dataset) -> int:
    """The instances one C-FIND finds (its matches, or the NumberOfStudyRelatedInstances
    of a study-level match); a failure status raises."""
    matches = 0
    for status, found in assoc.send_c_find(query, STUDY_ROOT_FIND):
        if not status:
            raise RuntimeError("C-FIND: no response (association aborted or timed out)")
        if status.Status == PENDING:
            counted = getattr(found, "NumberOfStudyRelatedInstances", None)
            matches += 1 if counted in (None, "") else int(counted)
        elif status.Status != 0:
            raise RuntimeError(f"C-FIND failed with status 0x{status.Status:04X}")
    return matches


def study_query(patient_id: str) -> Dataset:
    return identifier(
        "STUDY",
        {
            "StudyInstanceUID": "",
            "PatientName": "",
            "NumberOfStudyRelatedInstances": "",
            "PatientID": patient_id,
        },
    )


def study_count_query(study_uid: str) -> Dataset:
    """The study with its instance count: what a workstation asks to see a study is whole
    (the catalog keeps the count; an image-level query of 1,000 instances would measure
    response encoding and the catalog's scan instead)."""
    return identifier("STUDY", {"StudyInstanceUID": study_uid, "NumberOfStudyRelatedInstances": ""})


def image_query(study_uid: str) -> Dataset:
    return identifier(
        "IMAGE", {"StudyInstanceUID": study_uid, "SOPInstanceUID": "", "InstanceNumber": ""}
    )


def barrier_metrics(http_port: int) -> dict[str, Any]:
    """The barrier's counters and its histogram (the qr reader) from a server's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    outcomes: dict[str, float] = {}
    readings: dict[str, float] = {}
    buckets: dict[float, float] = {}
    seconds = {"count": 0.0, "sum": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "micropacs_read_barrier_total" and labels["reader"] == READER:
                outcomes[labels["outcome"]] = sample.value
            elif sample.name == "micropacs_read_barrier_readings_total":
                readings[labels["kind"]] = sample.value
            elif sample.name.startswith("micropacs_read_barrier_seconds_") and (
                labels.get("reader") == READER
            ):
                kind = sample.name.removeprefix("micropacs_read_barrier_seconds_")
                if kind == "bucket":
                    buckets[float(labels["le"])] = sample.value
                elif kind in seconds:
                    seconds[kind] = sample.value
    return {"outcomes": outcomes, "readings": readings, "seconds": seconds, "buckets": buckets}


def metrics_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the barrier counted between two readings of /metrics, in a report's terms."""

    def delta(name: str) -> dict[Any, float]:
        return {
            key: value - before[name].get(key, 0.0)
            for key, value in after[name].items()
            if value - before[name].get(key, 0.0)
        }

    outcomes = {key: int(value) for key, value in delta("outcomes").items()}
    count = after["seconds"]["count"] - before["seconds"]["count"]
    total = after["seconds"]["sum"] - before["seconds"]["sum"]
    buckets = delta("buckets")
    p95 = next((le for le in sorted(buckets) if buckets[le] >= 0.95 * count), None)
    return {
        "outcomes": outcomes,
        "timeouts": outcomes.get("timeout", 0),
        "readings": {key: int(value) for key, value in delta("readings").items()},
        "barrier_seconds": {
            "count": int(count),
            "mean_ms": round(total / count * 1000, 3) if count else None,
            # the histogram's bucket bound: an upper bound of the p95
            "p95_at_most_ms": p95 * 1000 if p95 is not None else None,
        },
    }


def wait_indexed(port: int, query: Dataset, count: int, timeout: float = 60) -> None:
    assoc = find_association(port)
    deadline = time.monotonic() + timeout
    try:
        while find(assoc, query) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} instances indexed after {timeout} s")
            time.sleep(0.1)
    finally:
        assoc.release()


def alternate(
    deployment: Deployment, cases: dict[str, Dataset], queries: int, desc: str
) -> dict[str, Any]:
    """``queries`` C-FINDs of each case to the qr with and without the barrier, in turn
    (which one goes first alternates, so neither always follows the other)."""
    servers_ = {"with_barrier": deployment.barrier_port, "without_barrier": deployment.plain_port}
    assocs = {name: find_association(port) for name, port in servers_.items()}
    samples: dict[str, dict[str, list[float]]] = {
        case: {name: [] for name in servers_} for case in cases
    }
    matches: dict[str, dict[str, set[int]]] = {
        case: {name: set() for name in servers_} for case in cases
    }
    try:
        for i in tqdm(range(queries), unit="query", desc=desc, mininterval=2):
            order = list(servers_) if i % 2 == 0 else list(reversed(servers_))
            for case, query in cases.items():
                for name in order:
                    started = time.perf_counter()
                    found = find(assocs[name], query)
                    samples[case][name].append(time.perf_counter() - started)
                    matches[case][name].add(found)
    finally:
        for assoc in assocs.values():
            assoc.release()
    result: dict[str, Any] = {}
    for case in cases:
        with_, without = samples[case]["with_barrier"], samples[case]["without_barrier"]
        result[case] = {
            "matches": {name: sorted(found) for name, found in matches[case].items()},
            "with_barrier": summary_ms(with_),
            "without_barrier": summary_ms(without),
            "barrier_cost_ms": {
                "median": round((statistics.median(with_) - statistics.median(without)) * 1000, 2),
                "p95": round(summary_ms(with_)["p95_ms"] - summary_ms(without)["p95_ms"], 2),
            },
            "baseline_median_s": statistics.median(with_),
        }
    return result


def caught_up_cost(deployment: Deployment, work: Path, queries: int) -> dict[str, Any]:
    """Part 1: the same C-FINDs to the qr with and without the barrier, index caught up."""
    patient_id = "BENCH-RB-CAUGHT-UP"
    files = dicomdata.make_ct_series(
        work / "caught-up",
        CAUGHT_UP_STUDY,
        rows=ROWS,
        cols=COLS,
        study=dicomdata.StudySpec(patient_id=patient_id),
    )
    study_uid = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    send(deployment.store_port, "MICROPACS", files, 1)
    cases = {
        "study_by_patient_id": study_query(patient_id),
        "image_level": image_query(study_uid),
        "study_count": study_count_query(study_uid),
    }
    wait_indexed(deployment.plain_port, cases["image_level"], len(files))
    before = barrier_metrics(deployment.barrier_http)
    result: dict[str, Any] = {
        "study_instances": len(files),
        **alternate(deployment, cases, queries, "caught up"),
    }
    after = barrier_metrics(deployment.barrier_http)
    result["metrics"] = metrics_between(before, after)
    result["metrics_total"] = {k: v for k, v in after.items() if k != "buckets"}
    return result


@dataclass
class Query:
    sent: float
    seconds: float
    acknowledged_before: int
    matches: int
    after_exit: bool


def query_while_storing(
    deployment: Deployment, files: list[Path], study_uid: str, run: int
) -> tuple[list[Query], dict[str, Any]]:
    """Part 2, one run: storescu sends ``files`` while a querier asks for the study."""
    acknowledged = 0
    exited = threading.Event()
    ready = threading.Event()
    queries: list[Query] = []
    errors: list[Exception] = []
    query = study_count_query(study_uid)

    def querier() -> None:
        try:
            assoc = find_association(deployment.barrier_port)
        except Exception as exc:  # the main thread raises it
            errors.append(exc)
            return
        finally:
            ready.set()
        deadline = None
        try:
            while True:
                after_exit = exited.is_set()
                before = acknowledged
                sent = time.perf_counter()
                found = find(assoc, query)
                queries.append(Query(sent, time.perf_counter() - sent, before, found, after_exit))
                if after_exit:
                    # with the barrier the first query after the exit finds everything; if
                    # one does not, go on until one does, to say how long it took
                    if found >= before:
                        break
                    deadline = deadline or time.monotonic() + 30
                    if time.monotonic() > deadline:
                        break
        except Exception as exc:  # the main thread raises it
            errors.append(exc)
        finally:
            assoc.release()

    thread = threading.Thread(target=querier, name="querier", daemon=True)
    thread.start()
    ready.wait(60)
    if errors:
        raise RuntimeError("the querier could not associate") from errors[0]
    failures = 0
    started = time.perf_counter()
    sender = subprocess.Popen(
        [
            "storescu",
            "-v",
            "-aec",
            "MICROPACS",
            "127.0.0.1",
            str(deployment.store_port),
            *map(str, files),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert sender.stdout is not None
    with tqdm(total=len(files), unit="inst", desc=f"run {run} store", mininterval=2) as bar:
        for line in sender.stdout:
            if SUCCESS.search(line):
                acknowledged += 1
                bar.update()
            elif FAILURE.search(line):
                failures += 1
    sender.stdout.close()
    sender.wait(120)
    store_seconds = time.perf_counter() - started
    exited.set()
    thread.join(90)
    if errors:
        raise RuntimeError("the querier failed") from errors[0]
    if sender.returncode != 0 or failures:
        raise RuntimeError(f"storescu: exit {sender.returncode}, {failures} failed stores")
    return queries, {
        "acknowledged": acknowledged,
        "store_seconds": round(store_seconds, 2),
        "images_per_s": round(acknowledged / store_seconds, 1),
    }


def after_store(
    deployment: Deployment,
    work: Path,
    instances: int,
    run: int,
    baseline_s: float,
    caught_up_queries: int,
) -> dict[str, Any]:
    """Part 2, one run, with a fresh study, and what the barrier counted meanwhile."""
    files = dicomdata.make_ct_series(
        work / f"run-{run}",
        instances,
        rows=ROWS,
        cols=COLS,
        study=dicomdata.StudySpec(patient_id=f"BENCH-RB-RUN-{run}"),
    )
    study_uid = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    before = barrier_metrics(deployment.barrier_http)
    queries, store = query_while_storing(deployment, files, study_uid, run)
    after = barrier_metrics(deployment.barrier_http)
    # the same query once the index has caught up: the first query after the store
    # compared with itself, not with part 1's smaller study
    full = alternate(
        deployment,
        {"study_count": study_count_query(study_uid)},
        caught_up_queries,
        f"run {run} after",
    )["study_count"]
    full_median_s = full.pop("baseline_median_s")
    post = [q for q in queries if q.after_exit]
    first = post[0]
    short = [q for q in queries if q.matches < q.acknowledged_before]
    extra = [q.seconds - baseline_s for q in queries]
    summary = summary_ms(extra)
    return {
        "instances": instances,
        **store,
        "queries": len(queries),
        "queries_during_store": len(queries) - len(post),
        "first_after_exit": {
            "latency_ms": round(first.seconds * 1000, 2),
            "matches": first.matches,
            "found_every_instance": first.matches == instances,
            "extra_over_caught_up_ms": round((first.seconds - full_median_s) * 1000, 2),
        },
        "caught_up_full_study": full,
        "all_found_after_exit_ms": (
            round((post[-1].sent + post[-1].seconds - post[0].sent) * 1000, 2)
            if post[-1].matches >= instances
            else None
        ),
        "latency_ms": summary_ms([q.seconds for q in queries]),
        "extra_latency_over_caught_up_ms": {
            "median_ms": summary["median_ms"],
            "p95_ms": summary["p95_ms"],
        },
        "found_fewer_than_acknowledged": len(short),
        "metrics": metrics_between(before, after),
    }


def report(result: dict[str, Any]) -> None:
    """A few lines for a person; the JSON follows."""
    caught = result["caught_up"]
    print(f"\n== read barrier ({result['backend']})")
    for case in ("study_by_patient_id", "image_level", "study_count"):
        c = caught[case]
        print(
            f"caught up, {case}: with {c['with_barrier']['median_ms']} ms median /"
            f" {c['with_barrier']['p95_ms']} p95, without {c['without_barrier']['median_ms']} /"
            f" {c['without_barrier']['p95_ms']}: cost {c['barrier_cost_ms']['median']} ms"
            f" median, {c['barrier_cost_ms']['p95']} p95"
        )
    m = caught["metrics"]
    print(f"caught up, barrier outcomes {m['outcomes']}, readings {m['readings']}")
    for i, run in enumerate(result["after_store"], 1):
        first = run["first_after_exit"]
        extra = run["extra_latency_over_caught_up_ms"]
        print(
            f"run {i}: {run['instances']} stored at {run['images_per_s']}/s, {run['queries']}"
            f" queries; first after storescu: {first['latency_ms']} ms"
            f" ({first['extra_over_caught_up_ms']} over the same query caught up),"
            f" {first['matches']} matches; all queries over part 1's median:"
            f" {extra['median_ms']} ms median / {extra['p95_ms']} p95;"
            f" found fewer than acknowledged: {run['found_fewer_than_acknowledged']};"
            f" timeouts: {run['metrics']['timeouts']}; outcomes {run['metrics']['outcomes']}"
        )


def measure(deployment: Deployment, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print("caught up: with and without the barrier …", flush=True)
    caught = caught_up_cost(deployment, work, args.queries)
    baseline_s = caught["study_count"]["baseline_median_s"]
    for case in ("study_by_patient_id", "image_level", "study_count"):
        caught[case].pop("baseline_median_s")
    runs = [
        after_store(deployment, work, args.instances, run, baseline_s, args.caught_up_queries)
        for run in range(1, args.runs + 1)
    ]
    return {
        "caught_up": caught,
        "extra_latency_baseline": "caught-up image-level median with the barrier (part 1)",
        "after_store": runs,
        "after_store_totals": {
            "found_fewer_than_acknowledged": sum(r["found_fewer_than_acknowledged"] for r in runs),
            "timeouts": sum(r["metrics"]["timeouts"] for r in runs),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("stack", "embedded"), default="stack")
    parser.add_argument("--queries", type=int, default=300, help="C-FINDs of each kind, part 1")
    parser.add_argument("--instances", type=int, default=1000, help="instances per run, part 2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--caught-up-queries",
        type=int,
        default=10,
        help="C-FINDs of the whole study to each qr after each run, once caught up",
    )
    parser.add_argument(
        "--reuse-stack",
        action="store_true",
        help="use the stack of `python -m stack.servers up` (started if missing, left"
        " running) instead of one of its own on free ports",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-barrier-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"backend": args.backend, "cpus": os.cpu_count()}
        if args.backend == "embedded":
            with embedded(work) as deployment:
                result.update(measure(deployment, work, args))
        else:
            result["catalog"] = "mongodb (FerretDB 1.24, SQLite backend)"
            if args.reuse_stack:
                stack = servers.up(servers.STACK_HOME / "run")
            else:
                stack = servers.up(work / "stack", servers.Ports.picked_by(free_port))
            try:
                with on_stack(stack, work) as deployment:
                    result.update(measure(deployment, work, args))
            finally:
                if not args.reuse_stack:
                    servers.down(stack.run_dir)
        report(result)
        save(f"read_barrier_{args.backend}", result)


if __name__ == "__main__":
    main()
