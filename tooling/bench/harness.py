"""One isolated stack per scenario, and what the scenarios measure on it.

``BenchStack`` is the local stack (``tooling.stack.LocalStack``) on ports and a database of its own
(``.local-bench-<scenario>``, ports 30xxx–32xxx + offset, database ``fiscalflow_bench_<scenario>``), wiped
before and stopped after, so the chaos and test suites running on the same machine never share
state with a measurement.  Services run under the stack's supervisor (``fiscalflow service run``
replicas, as in production); ``stages`` switches the running set, the supervisor stops the rest.

Measurements come from outside the services: their own Prometheus counters (messages processed per
stage, report events) scraped every ``POLL_S`` (every ``RUN_SAMPLE_S`` while a pipeline run is far
from its end), and ``/proc`` for CPU seconds (utime + stime) and RSS (VmRSS now, VmHWM peak) per
process.  Nothing here changes how the services run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.cli.api_client import bearer
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import Stage
from tooling.bench import corpus

POLL_S = 0.25
# A scrape costs the service ~0.7-1.1 ms of CPU and this harness ~0.5 ms (5 stages, measured): at
# POLL_S through a 100,000-invoice run that was ~5.6 CPU-s, ~1.5 % of what the run measures, for
# counters that move for minutes.  While a pipeline run is far from its end, once a second.
RUN_SAMPLE_S = 1.0
JOB_POLL_S = 2.0
JOB_POLL_FAR_S = 30.0  # job status while most records are still flowing (see follow_jobs)
TICK = os.sysconf("SC_CLK_TCK")
PIPELINE = [Stage.INGEST, Stage.DOWNLOAD, Stage.VALIDATE, Stage.STORE, Stage.REPORT]


def bench_settings(name: str, offset: int, **overrides: Any) -> Settings:
    """A scenario's stack on ports of its own: 30xxx–32xxx, below Linux's ephemeral range (32768 and
    up), where a client's outgoing connection may already hold the port a server is about to bind
    (it happened: the latency scenario's broker on 39162 exited with "Address in use"), and above
    the test stacks' 2xxxx."""
    base: dict[str, Any] = dict(
        local_dir=PROJECT_ROOT / f".local-bench-{name}",
        bootstrap_servers=f"127.0.0.1:{31092 + offset}",
        s3_endpoint=f"http://127.0.0.1:{30333 + offset}",
        sftp_regions=",".join(f"{r}=127.0.0.1:{32201 + offset + i}" for i, r in enumerate(corpus.REGIONS)),
        pg_dsn=f"postgresql://postgres@127.0.0.1:5432/fiscalflow_bench_{name.replace('-', '_')}",
        ingest_port=30080 + offset,
        report_port=30081 + offset,
        metrics_port=0,
        **corpus.trust_settings(),
    )
    base.update(overrides)
    return Settings(**base)


def uptime() -> str:
    """The load average when a figure was taken: the machine is shared with other engineers' runs."""
    try:
        load = open("/proc/loadavg").read().split()[:3]
        return "load " + " ".join(load)
    except OSError:
        return "load ?"


# --- /proc -------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def process_table() -> tuple[dict[int, list[int]], dict[int, list[str]]]:
    """Every process's children, and its ``/proc/<pid>/stat`` fields after the command name."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = fields
    return children, stats


def descendants(children: dict[int, list[int]], pid: int) -> list[int]:
    out, stack = [], list(children.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def cpu_tree_seconds(pid: int) -> float:
    """CPU of ``pid``, its live descendants and its reaped children (cutime + cstime): sshd serves each
    SFTP session in a child process, so the parent's own CPU is not the server's."""
    children, stats = process_table()
    return sum(sum(int(x) for x in stats[p][11:15]) / TICK for p in [pid, *descendants(children, pid)] if p in stats)


class SessionTrees:
    """The CPU of servers that serve each client in a child process that ends with its connection
    (sshd: one per SFTP session): the server's own, plus the last reading of every descendant seen
    while sampling, ended ones included.  Since the download stage closes idle connections (decision
    0036) sessions end during a run, and what they used did not reach the sshd's ``cutime``: with
    :func:`cpu_tree_seconds` the three regions read 0.00-0.01 CPU-s per 1,000 documents instead of
    0.03-0.05.  A session that starts and ends between two samples is missed."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._seen: dict[str, dict[tuple[int, str], float]] = {name: {} for name in roots}
        self._own: dict[str, float] = {}

    def sample(self) -> None:
        children, stats = process_table()

        def own(p: int) -> float:
            return (int(stats[p][11]) + int(stats[p][12])) / TICK

        for name, root in self.roots.items():
            if root in stats:
                self._own[name] = own(root)
            for p in descendants(children, root):
                if p in stats:
                    self._seen[name][(p, stats[p][19])] = own(p)  # keyed by start time too: pids are reused

    def cpu_s(self) -> dict[str, float]:
        return {name: self._own.get(name, 0.0) + sum(self._seen[name].values()) for name in self.roots}


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every process, the kernel's work for them
    too): the figure two cores bound at 2 per second."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        return (user + nice + system + irq + softirq + steal) / TICK
    except (OSError, ValueError):
        return 0.0


def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's postmaster (its backends are its children), read from the data
    directory's postmaster.pid: readable here as root on the machine's own server."""
    try:
        out = subprocess.run(["psql", dsn, "-qtAc", "SHOW data_directory"], capture_output=True, text=True,
                             timeout=10)
        first = (Path(out.stdout.strip()) / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


PG_SPLIT_S = 10.0


def pg_backends_by_service(dsn: str) -> dict[int, str]:
    """The PostgreSQL backends serving fiscalflow services, by pid: the service each one's
    connection names (its ``application_name``, read by ``shared.db.migrate.service_of``)."""
    try:
        out = subprocess.run(["psql", dsn, "-qtAF", "\t", "-c",
                              "SELECT pid, application_name FROM pg_stat_activity"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    from shared.db.migrate import service_of

    found: dict[int, str] = {}
    for line in out.stdout.splitlines():
        pid, _, name = line.partition("\t")
        service = service_of(name)
        if pid.strip().isdigit() and service is not None:
            found[int(pid)] = service
    return found


class PostgresByService:
    """The PostgreSQL server's CPU split by the service whose connection it served: each backend's
    own CPU over the run (``/proc``), summed per service.  A backend that ended during the run is
    not seen again, so what the split misses is in the whole server's figure only; sampled at
    every call of :meth:`sample` so that it misses little."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.first: dict[int, float] = {}  # pid -> CPU when first seen
        self.last: dict[int, tuple[str, float]] = {}  # pid -> (service, CPU when last seen)

    def sample(self, at_start: bool = False) -> None:
        for pid, service in pg_backends_by_service(self.dsn).items():
            cpu = cpu_seconds(pid)
            if cpu == 0.0 and pid in self.last:  # ended since it was listed
                continue
            if pid not in self.first:
                self.first[pid] = cpu if at_start else 0.0  # a backend started during the run: all of it
            self.last[pid] = (service, cpu)

    def cpu_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (service, cpu) in self.last.items():
            out[service] = out.get(service, 0.0) + max(cpu - self.first.get(pid, 0.0), 0.0)
        return dict(sorted(out.items()))


def rss_mb(pid: int, peak: bool = False) -> float:
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- Prometheus text ----------------------------------------------------------------------------
_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$')


def scrape(url: str, client: httpx.Client) -> dict[str, float]:
    """``metric{stage=..}`` -> value summed over other labels, for the counters the bench reads."""
    out: dict[str, float] = {}
    try:
        text = client.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        if name not in ("fiscalflow_messages_processed_total", "fiscalflow_report_events_total"):
            continue
        out[name] = out.get(name, 0.0) + float(value)
        for outcome in ("ok", "dead_letter"):
            if f'outcome="{outcome}"' in (labels or ""):
                out[f"{name}:{outcome}"] = out.get(f"{name}:{outcome}", 0.0) + float(value)
    return out


@dataclass
class Series:
    """One process's samples: (t, processed, cpu s, rss MB)."""
    stage: str
    pid: int
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)


class BenchStack:
    def __init__(self, settings: Settings) -> None:
        from tooling.stack import LocalStack

        self.settings = settings
        self.stack = LocalStack(settings)
        self.series: dict[int, Series] = {}
        self.client = httpx.Client(timeout=30)
        self.headers = bearer(settings, admin=True)  # submitting jobs: the admin token
        self.read_headers = bearer(settings)  # job views: the read token
        self.submitted: dict[str, int] = {}  # job id -> its record count
        # PostgreSQL's CPU by service, while a pipeline runs (every PG_SPLIT_S: a psql each time)
        self.pg_split: PostgresByService | None = None
        self._pg_sampled = 0.0
        self.sessions: SessionTrees | None = None  # the SFTP servers' sessions, sampled with the stages

    # --- lifecycle ---------------------------------------------------------------------------
    def up(self) -> None:
        if self.settings.local_dir.exists():
            self.stack.down()
            shutil.rmtree(self.settings.local_dir)
        dsn = self.settings.pg_dsn.get_secret_value()
        name = dsn.rsplit("/", 1)[1]
        # The shared PostgreSQL may be restarting under someone's chaos test: wait for it rather than
        # letting the stack start a private cluster on its port.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and subprocess.run(
                ["psql", dsn.rsplit("/", 1)[0] + "/postgres", "-qtAc", "SELECT 1"], capture_output=True).returncode:
            time.sleep(1)
        subprocess.run(["psql", dsn.rsplit("/", 1)[0] + "/postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=False, capture_output=True)
        self.stack.up(services=())

    def down(self) -> None:
        self.client.close()
        self.stack.down()

    def stages(self, stages: Sequence[Stage], replicas: dict[str, int] | None = None) -> float:
        """Run exactly these stages (others stopped); returns seconds until every replica was ready."""
        t0 = time.monotonic()
        self.stack.up(services=list(stages), replicas=replicas or {}, timeout_s=180)
        if Stage.INGEST in stages:
            self._wait_http(self.settings.ingest_port)
        return time.monotonic() - t0

    def _wait_http(self, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"port {port} not answering; logs in {self.settings.local_dir / 'logs'}")

    def region_roots(self) -> dict[str, Any]:
        return {r: self.settings.region_root(r) for r in self.settings.regions()}

    def place(self, count: int, batch: str = corpus.BATCH, skip: int = 0) -> corpus.Placed:
        return corpus.place(count, self.region_roots(), batch, skip)

    # --- processes and metrics -----------------------------------------------------------------
    def replicas(self) -> list[tuple[str, int, str]]:
        """(stage, pid, ops URL) of every live replica."""
        from tooling.stack.services import replica_ops_url

        state = self.stack.state.load()
        out = []
        for key, rec in state.replicas.items():
            if rec.pid is None or not rec.is_alive():
                continue
            out.append((key.rsplit("-", 1)[0], rec.pid, replica_ops_url(self.settings, key, rec.pid)))
        return out

    def infra_pids(self) -> dict[str, int]:
        """Servers' pids; an external PostgreSQL (the machine's own) by its postmaster, since its
        CPU is part of what a document costs (it is the whole server's: quiet the machine first)."""
        state = self.stack.state.load()
        pids = {name: rec.pid for name, rec in state.components.items()
                if rec.pid is not None and not rec.external and name != "services"}
        if "postgres" not in pids:
            pg = postmaster_pid(self.settings.pg_dsn.get_secret_value())
            if pg is not None:
                pids["postgres (whole server)"] = pg
        return pids

    def sample(self) -> dict[str, float]:
        """One sample of every replica; returns processed messages per stage (summed over replicas),
        and under ``<stage>:ok`` / ``<stage>:dead_letter`` those outcomes."""
        now = time.monotonic()
        if self.pg_split is not None and now - self._pg_sampled >= PG_SPLIT_S:
            self.pg_split.sample()
            self._pg_sampled = now
        if self.sessions is not None:
            self.sessions.sample()
        per_stage: dict[str, float] = {}
        for stage, pid, url in self.replicas():
            values = scrape(url, self.client) if url else {}
            n = values.get("fiscalflow_messages_processed_total", 0.0) + values.get(
                "fiscalflow_report_events_total", 0.0)
            s = self.series.setdefault(pid, Series(stage, pid))
            if not values and s.samples:
                n = s.samples[-1][1]  # a missed scrape keeps the last count
            s.samples.append((now, n, cpu_seconds(pid), rss_mb(pid)))
            per_stage[stage] = per_stage.get(stage, 0.0) + n
            for outcome in ("ok", "dead_letter"):
                key = f"{stage}:{outcome}"
                per_stage[key] = per_stage.get(key, 0.0) + values.get(
                    f"fiscalflow_messages_processed_total:{outcome}", 0.0)
        return per_stage

    def stage_figures(self, stage: str) -> dict[str, float]:
        """docs/s (first counted message to last), CPU s per 1,000 docs, peak and median RSS of a stage."""
        series = [s for s in self.series.values() if s.stage == stage and s.samples]
        if not series:
            return {}
        total = sum(s.samples[-1][1] for s in series)
        starts = [next((t for t, n, _, _ in s.samples if n > 0), None) for s in series]
        ends = []
        for s in series:
            final = s.samples[-1][1]
            ends.append(next(t for t, n, _, _ in s.samples if n >= final))
        t_first = min((t for t in starts if t is not None), default=None)
        t_last = max(ends)
        cpu = 0.0
        for s in series:
            first = next((i for i, (_, n, _, _) in enumerate(s.samples) if n > 0), None)
            if first is None:
                continue
            # CPU from the sample before the first counted message to the end of the work.
            i0 = max(first - 1, 0)
            i1 = next(i for i, (_, n, _, _) in enumerate(s.samples) if n >= s.samples[-1][1])
            cpu += s.samples[i1][2] - s.samples[i0][2]
        # Steady rate: while every replica was working (a late joiner's rebalance is not in it).
        lo, hi = max((t for t in starts if t is not None), default=0.0), min(ends)
        steady = _count_at(series, hi) - _count_at(series, lo)
        steady_rate = steady / (hi - lo) if hi - lo >= 1.0 else 0.0
        busy = [r for s in series for (t, n, _, r) in s.samples if t_first is not None and t_first <= t <= t_last]
        span = (t_last - t_first + POLL_S) if t_first is not None else 0.0
        return {
            "docs": total,
            "seconds": span,
            "docs_per_s": total / span if span > 0 else 0.0,
            "cpu_per_1000": cpu / total * 1000 if total else 0.0,
            "cpu_s": cpu,
            "rss_peak_mb": max(rss_mb(s.pid, peak=True) or max(x[3] for x in s.samples) for s in series),
            "rss_steady_mb": statistics.median(busy) if busy else 0.0,
            "replicas": len(series),
            "steady_docs_per_s": steady_rate,
        }

    def wait_processed(self, stage: str, target: float, timeout: float, idle_s: float = 30) -> float:
        """Sample until ``stage`` processed ``target`` messages (or made no progress for ``idle_s``)."""
        deadline = time.monotonic() + timeout
        last, last_change = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            n = self.sample().get(stage, 0.0)
            if n >= target:
                return n
            if n != last:
                last, last_change = n, time.monotonic()
            elif n > 0 and time.monotonic() - last_change > idle_s:
                return n
            time.sleep(POLL_S)
        return last

    # --- the ingest API ----------------------------------------------------------------------
    @property
    def ingest(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    def submit(self, body: dict[str, Any]) -> str:
        resp = self.client.post(f"{self.ingest}/api/v1/jobs", headers=self.headers, json=body, timeout=300)
        if resp.status_code != 202:
            raise RuntimeError(f"job refused: {resp.status_code} {resp.text[:300]}")
        body = resp.json()
        self.submitted[str(body["job_id"])] = int(body["record_count"])
        return str(body["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.client.get(f"{self.ingest}/api/v1/jobs/{job_id}", headers=self.read_headers)
        body: dict[str, Any] = resp.json()
        return body

    def follow_jobs(self, jobs: list[str], timeout: float) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Sample processes while the jobs run; True when every job completed."""
        deadline = time.monotonic() + timeout
        status: dict[str, dict[str, Any]] = {}
        asked = -float("inf")  # when the jobs were last asked for their status
        expected = sum(self.submitted.get(j, 0) for j in jobs)
        while time.monotonic() < deadline:
            reported = self.sample().get("report", 0.0)
            # A job's status counts its records in PostgreSQL, a join over all its members: 130 ms
            # of PostgreSQL CPU for a 33,000-record job (decision 0011), so three jobs asked every 2 s
            # were ~10 % of this 2-core machine — the benchmark loading what it measures.  The
            # report service's event counter (scraped anyway) says when the end is near: until
            # then ask every 30 s (a safety net), from then on every 2 s.
            near_end = not expected or reported >= 0.98 * expected
            if time.monotonic() - asked >= (JOB_POLL_S if near_end else JOB_POLL_FAR_S):
                status = {j: self.job(j) for j in jobs}
                asked = time.monotonic()
                if all(s["status"] == "completed" for s in status.values()):
                    return True, status
            time.sleep(POLL_S if near_end else RUN_SAMPLE_S)
        return False, status


def register_rows(settings: Settings, rows: list[dict[str, str]]) -> None:
    """Register records straight in PostgreSQL (what ``fiscalflow register`` does)."""
    import asyncpg

    from shared.db.records import Registration

    async def go() -> None:
        from shared.db.migrate import migrate
        from shared.db.records import register

        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            await migrate(conn)

            await register(conn, [Registration(r["record_id"], r["region"], r["path"], r["sha256"],
                                               int(r["size"])) for r in rows])
        finally:
            await conn.close()

    asyncio.run(go())


def publish_ids(settings: Settings, ids: list[str], priority: str = "normal") -> float:
    """Publish ingest requests straight to the topic; returns seconds until every one was acknowledged."""
    from services.ingest.publisher import publish
    from shared.domain.records import Priority
    from shared.runtime.kafka import AsyncProducer, producer_config

    async def go() -> float:
        producer = AsyncProducer(producer_config(settings, "fiscalflow-bench"))
        try:
            t0 = time.perf_counter()
            await publish(producer, ids, Priority(priority), None)
            return time.perf_counter() - t0
        finally:
            producer.close()

    return asyncio.run(go())


PROFILE_ENV = "FISCALFLOW_BENCH_PROFILE"


@contextlib.contextmanager
def profiled(b: BenchStack, stage: Stage) -> Iterator[None]:
    """With ``FISCALFLOW_BENCH_PROFILE=DIR``: py-spy samples every replica of ``stage`` for the block,
    collapsed stacks to ``DIR/<stage>-<pid>.txt`` (flamegraph.pl or speedscope read them)."""
    out = os.environ.get(PROFILE_ENV)
    if not out:
        yield
        return
    spy = shutil.which("py-spy") or str(PROJECT_ROOT / ".venv" / "bin" / "py-spy")
    os.makedirs(out, exist_ok=True)
    procs = [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
                               "--nonblocking", "-o", f"{out}/{stage.value}-{pid}.txt"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for st, pid, _ in b.replicas() if st == stage.value]
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _count_at(series: list[Series], t: float) -> float:
    total = 0.0
    for s in series:
        total += max((n for ts, n, _, _ in s.samples if ts <= t), default=0.0)
    return total


@contextlib.contextmanager
def bench_stack(settings: Settings) -> Iterator[BenchStack]:
    b = BenchStack(settings)
    b.up()
    try:
        yield b
    finally:
        b.down()


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"
