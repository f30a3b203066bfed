"""The embedded single-node KRaft Apache Kafka broker (no Docker).

``start(data_dir)`` fetches Kafka's jars from Maven Central once (with Maven, into
``~/.cache/steplog/kafka-<version>/libs``), formats a KRaft log dir under
``data_dir/kafka/data``, writes ``server.properties`` and a log4j config, starts
``java ... kafka.Kafka`` detached from the calling process and waits until an
AdminClient sees the broker. It records the broker's address and pid in
``data_dir/kafka/broker.json`` (``Settings.broker_file``), where every other
command finds it. ``stop(data_dir)`` stops exactly that process; ``status``
reports on it. The data dir keeps its topics and records across stop/start.

Layout of ``data_dir/kafka``::

    broker.json         {"bootstrap", "pid", "version", "controller_port", ...}
    server.properties   rewritten on every start
    log4j.properties
    data/               the KRaft log dir (metadata and topic partitions)
    logs/               server.log (log4j) and kafka.out (the JVM's stdout/stderr)
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import LocalKafkaError
from streams.settings import BROKER_FILE

log = logging.getLogger(__name__)

#: The Apache Kafka release the embedded broker runs. Kafka 3.9.x is the last line
#: that still speaks the older protocol versions faust-streaming's aiokafka driver
#: uses (Kafka 4 removed them). ``pom.xml`` receives it as ``-Dkafka.version``.
KAFKA_VERSION = "3.9.2"
#: Oldest Java release Kafka 3.9's broker runs on (as a supported configuration).
MIN_JAVA = 17
#: Where fetched jars are cached, one directory per Kafka version.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "steplog"
#: Broker-wide record size limit: an 8 MiB record plus 64 KiB of batch overhead,
#: so that 4 MiB step outputs (and their envelopes) fit in every topic, including
#: the ones Faust creates itself (changelogs, repartition topics).
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024 + 64 * 1024
DEFAULT_HEAP = "512m"
HOST = "127.0.0.1"
#: How long ``stop`` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_SECONDS = 20.0

POM = Path(__file__).with_name("pom.xml")
_MARKER = ".complete"
_MAIN_CLASS = "kafka.Kafka"
_NO_BROKER_HINT = "or set STEPLOG_BOOTSTRAP_SERVERS to use an existing Kafka cluster"

# Popen handles of brokers this process started: kept so they are reaped (no
# zombies, no "subprocess still running" warnings) when this process stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BrokerInfo:
    """A local broker as recorded in ``data_dir/kafka/broker.json``."""

    bootstrap: str
    port: int
    controller_port: int
    pid: int | None
    version: str
    cluster_id: str
    data_dir: Path
    #: The recorded process is alive and is this data dir's broker.
    running: bool = False
    #: ``start`` found the broker already running and did not start a new one.
    already_running: bool = False

    @property
    def log_file(self) -> Path:
        return _logs_dir(self.data_dir) / "server.log"


# --- paths ---------------------------------------------------------------------------


def _kafka_dir(data_dir: Path) -> Path:
    return data_dir / "kafka"


def _record_file(data_dir: Path) -> Path:
    return data_dir / BROKER_FILE


def _log_dir(data_dir: Path) -> Path:
    return _kafka_dir(data_dir) / "data"


def _logs_dir(data_dir: Path) -> Path:
    return _kafka_dir(data_dir) / "logs"


def _properties_file(data_dir: Path) -> Path:
    return _kafka_dir(data_dir) / "server.properties"


def _out_file(data_dir: Path) -> Path:
    return _logs_dir(data_dir) / "kafka.out"


def cache_dir_for(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """The directory holding one Kafka version's jars (``<cache>/kafka-<version>``)."""
    return (cache_dir or DEFAULT_CACHE_DIR) / f"kafka-{version}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``path``, held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- tools: java and maven -----------------------------------------------------------


def _java_hint() -> str:
    return (
        f"install a JDK (apt-get install openjdk-{MIN_JAVA}-jre-headless, "
        f"brew install openjdk@{MIN_JAVA}) {_NO_BROKER_HINT}"
    )


def find_java(java: str | None = None) -> str:
    """The path of a Java 17+ ``java`` (``java`` given, else the one on PATH).

    Raises ``LocalKafkaError`` with what to install when there is none.
    """
    path = shutil.which(java) if java else shutil.which("java")
    if path is None:
        where = f"no Java at {java}" if java else "no `java` on PATH"
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker ({where}): {_java_hint()}"
        )
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker ({path} failed: {exc}): "
            f"{_java_hint()}"
        ) from None
    version = java_major_version(out.stderr + out.stdout)
    if version is None or version < MIN_JAVA:
        found = f"Java {version}" if version else "an unrecognised Java"
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker ({path} is {found}): "
            f"{_java_hint()}"
        )
    return path


def java_major_version(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0_392`` → 8, ``17.0.15`` → 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _find_maven(mvn: str | None) -> str:
    path = shutil.which(mvn) if mvn else shutil.which("mvn")
    if path is None:
        where = f"no Maven at {mvn}" if mvn else "no `mvn` on PATH"
        raise LocalKafkaError(
            f"Maven is needed once to fetch Apache Kafka's jars from Maven Central ({where}): "
            f"install it (apt-get install maven, brew install maven) {_NO_BROKER_HINT}"
        )
    return path


def _jars_complete(libs: Path, version: str) -> bool:
    return (libs.parent / _MARKER).is_file() and (libs / f"kafka_2.13-{version}.jar").is_file()


def fetch_jars(
    cache_dir: Path | None = None,
    *,
    version: str = KAFKA_VERSION,
    mvn: str | None = None,
    java: str | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = 1800.0,
) -> Path:
    """Fetch Kafka's jars (and a logging backend) with Maven once; return the libs dir.

    ``cache_dir`` defaults to ``~/.cache/steplog``; the jars land in
    ``<cache_dir>/kafka-<version>/libs``. A marker file is written after a complete
    download, so later calls return at once. Safe to call from several processes.
    """
    home = cache_dir_for(version, cache_dir)
    libs = home / "libs"
    if _jars_complete(libs, version):
        return libs
    with _locked(home / ".lock"):
        if _jars_complete(libs, version):
            return libs
        maven = _find_maven(mvn)
        if progress:
            progress(f"Fetching Apache Kafka {version} jars from Maven Central (once) into {libs}")
        env = dict(os.environ)
        if java:
            # Maven runs on the same JDK as the broker when one is given explicitly.
            env["JAVA_HOME"] = str(Path(find_java(java)).resolve().parent.parent)
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=home) as tmp:
            work = Path(tmp)
            pom = work / "pom.xml"
            shutil.copyfile(POM, pom)
            target = work / "libs"
            cmd = [
                maven,
                "-q",
                "-B",
                "-f",
                str(pom),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={target}",
            ]
            try:
                done = subprocess.run(
                    cmd, cwd=work, capture_output=True, text=True, timeout=timeout, env=env
                )
            except subprocess.TimeoutExpired:
                raise LocalKafkaError(
                    f"Maven did not fetch Apache Kafka {version}'s jars within {timeout:.0f}s: "
                    "check your network access to Maven Central (repo.maven.apache.org)"
                ) from None
            if done.returncode != 0 or not (target / f"kafka_2.13-{version}.jar").is_file():
                tail = _tail_text(done.stdout + done.stderr, 15)
                raise LocalKafkaError(
                    f"Maven could not fetch Apache Kafka {version}'s jars from Maven Central "
                    f"(exit {done.returncode}); its output ends with:\n{tail}"
                )
            if libs.exists():
                shutil.rmtree(libs)
            target.rename(libs)
        (home / _MARKER).write_text(
            json.dumps({"version": version, "jars": sorted(p.name for p in libs.glob("*.jar"))})
        )
    return libs


# --- processes -----------------------------------------------------------------------


def _cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid``, or None when no such (live) process exists."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            # The state follows the ")" that closes the command name; Z = zombie.
            if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
                return None
            raw = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:  # no procfs (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    line = out.stdout.strip()
    return line.split() if out.returncode == 0 and line else None


def _is_our_broker(pid: int | None, data_dir: Path) -> bool:
    """``pid`` is alive and is the ``kafka.Kafka`` JVM started for ``data_dir``."""
    if pid is None or pid <= 0:
        return False
    props = str(_properties_file(data_dir))
    child = _children.get(pid)
    if child is not None:  # started by this process: its handle is the authority
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return isinstance(child.args, list) and props in child.args
    _reap(pid)
    cmd = _cmdline(pid)
    if not cmd:
        return False
    return _MAIN_CLASS in cmd and any(part == props for part in cmd)


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is a child of this process and has exited."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int) -> bool:
    _reap(pid)
    return _cmdline(pid) is not None


# --- ports ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Something listens on ``127.0.0.1:port`` (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the record ----------------------------------------------------------------------


def _read_record(data_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_file(data_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalKafkaError(
            f"cannot read the broker record {_record_file(data_dir)}: {exc} "
            "(delete it to start afresh; the topics live in data/ beside it)"
        ) from None
    return record if isinstance(record, dict) else None


def _write_record(data_dir: Path, record: dict[str, Any]) -> None:
    path = _record_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def _info(data_dir: Path, record: dict[str, Any], **extra: Any) -> BrokerInfo:
    pid = record.get("pid")
    return BrokerInfo(
        bootstrap=str(record["bootstrap"]),
        port=int(record.get("port") or str(record["bootstrap"]).rsplit(":", 1)[1]),
        controller_port=int(record["controller_port"]),
        pid=int(pid) if pid else None,
        version=str(record.get("version", KAFKA_VERSION)),
        cluster_id=str(record.get("cluster_id", "")),
        data_dir=data_dir,
        **extra,
    )


# --- configuration files -------------------------------------------------------------


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes them: 16 random bytes, base64url, 22 chars."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return text


def _formatted_cluster_id(data_dir: Path) -> str | None:
    """The cluster id of an already formatted log dir (from its meta.properties)."""
    meta = _log_dir(data_dir) / "meta.properties"
    try:
        for line in meta.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id" and value.strip():
                return value.strip()
    except FileNotFoundError:
        return None
    return None


def _prop(value: str | Path) -> str:
    return str(value).replace("\\", "\\\\")


def _server_properties(
    data_dir: Path, port: int, controller_port: int, max_message_bytes: int
) -> str:
    voters = f"1@{HOST}:{controller_port}"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": _prop(_log_dir(data_dir)),
        # steplog creates every topic it uses, with its sizes and configs.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        # Records up to 8 MiB (4 MiB step outputs plus envelopes) in every topic.
        "message.max.bytes": str(max_message_bytes),
        "replica.fetch.max.bytes": str(max_message_bytes),
        # A local broker shares a small machine with its clients: fewer threads handing
        # requests to each other measured ~10% more runs/s than 3 + 4 (BENCHMARKS.md).
        "num.network.threads": "1",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "log.retention.check.interval.ms": "300000",
        "delete.topic.enable": "true",
    }
    head = "# Written by steplog (streams/kafka/local.py) on every start; edits are lost.\n"
    return head + "".join(f"{key}={value}\n" for key, value in lines.items())


def _log4j_properties(data_dir: Path) -> str:
    server_log = _prop(_logs_dir(data_dir) / "server.log")
    return (
        "# Written by steplog: the local broker logs to files under this data dir.\n"
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
        f"log4j.appender.file.File={server_log}\n"
        "log4j.appender.file.MaxFileSize=20MB\n"
        "log4j.appender.file.MaxBackupIndex=3\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka=INFO\n"
        "log4j.logger.org.apache.kafka=INFO\n"
        "log4j.logger.org.apache.zookeeper=WARN\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.state.change.logger=WARN\n"
        "log4j.logger.kafka.log.LogCleaner=WARN\n"
        "log4j.logger.kafka.authorizer.logger=WARN\n"
    )


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return _tail_text(text, lines)


def _format_log_dir(java: str, libs: Path, data_dir: Path, cluster_id: str) -> None:
    cmd = [
        java,
        "-Xmx256m",
        f"-Dlog4j.configuration=file:{_kafka_dir(data_dir) / 'log4j.properties'}",
        "-cp",
        str(libs / "*"),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(_properties_file(data_dir)),
        "--ignore-formatted",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise LocalKafkaError(
            f"formatting the KRaft log dir {_log_dir(data_dir)} failed "
            f"(exit {done.returncode}):\n{_tail_text(done.stdout + done.stderr, 15)}"
        )


# --- readiness -----------------------------------------------------------------------


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """An AdminClient at ``bootstrap`` lists topics and sees at least one broker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException: not there (yet)
        return False
    return bool(metadata.brokers)


def _wait_ready(
    alive: Callable[[], int | None],
    data_dir: Path,
    port: int,
    bootstrap: str,
    timeout: float,
    what: str,
) -> None:
    """Wait until the broker answers; ``alive()`` returns None while the process runs,
    else its exit code (or -1 when unknown)."""
    deadline = time.monotonic() + timeout
    while True:
        code = alive()
        if code is not None:
            status = f" (exit code {code})" if code >= 0 else ""
            raise LocalKafkaError(
                f"the local Kafka broker exited during start-up{status}{_log_hint(data_dir)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"the local Kafka broker ({what}) did not answer on {bootstrap} "
                f"within {timeout:.0f}s{_log_hint(data_dir)}"
            )
        if _can_connect(port) and broker_answers(bootstrap, timeout=min(5.0, max(remaining, 0.5))):
            return
        time.sleep(0.2)


def _log_hint(data_dir: Path) -> str:
    tail = _tail(_out_file(data_dir), 10)
    server = _tail(_logs_dir(data_dir) / "server.log", 20)
    errors = "\n".join(
        line for line in server.splitlines() if " ERROR " in line or " FATAL " in line
    )
    parts = [p for p in (tail, errors) if p]
    detail = "\n".join(parts)
    where = f" (logs: {_logs_dir(data_dir)})"
    return f"{where}; its log ends with:\n{detail}" if detail else where


# --- the public operations -----------------------------------------------------------


def start(
    data_dir: Path | str,
    port: int | None = None,
    *,
    controller_port: int | None = None,
    java: str | None = None,
    mvn: str | None = None,
    cache_dir: Path | None = None,
    heap: str = DEFAULT_HEAP,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> BrokerInfo:
    """Start (or find running) the local broker of ``data_dir``; return where it listens.

    - ``port``/``controller_port``: fixed ports on 127.0.0.1; by default the ports
      recorded by an earlier start of this data dir, else free ones.
    - ``java``/``mvn``: the executables to use (default: from PATH).
    - ``cache_dir``: where the jars are cached (default ``~/.cache/steplog``).
    - ``timeout``: seconds to wait for the broker to answer an AdminClient.

    Idempotent: when the recorded broker is alive it is returned as is
    (``already_running=True``). Raises ``LocalKafkaError`` with one line saying
    what to install or change when Java 17+, Maven or a port is missing.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    with _locked(_kafka_dir(data_dir) / ".lock"):
        record = _read_record(data_dir) or {}
        pid = record.get("pid")
        if record and _is_our_broker(pid, data_dir):
            info = _info(data_dir, record, running=True, already_running=True)
            if port is not None and port != info.port:
                raise LocalKafkaError(
                    f"the local Kafka broker of {data_dir} already runs on {info.bootstrap}: "
                    f"stop it first (steplog kafka stop) to move it to port {port}"
                )
            running_pid = info.pid or 0
            _wait_ready(
                lambda: None if _is_our_broker(running_pid, data_dir) else -1,
                data_dir,
                info.port,
                info.bootstrap,
                timeout,
                f"running, pid {running_pid}",
            )
            return info

        java_path = find_java(java)
        port, controller_port = _choose_ports(data_dir, record, port, controller_port)
        libs = fetch_jars(cache_dir, mvn=mvn, java=java, progress=progress)

        kafka_dir = _kafka_dir(data_dir)
        _logs_dir(data_dir).mkdir(parents=True, exist_ok=True)
        _properties_file(data_dir).write_text(
            _server_properties(data_dir, port, controller_port, max_message_bytes)
        )
        (kafka_dir / "log4j.properties").write_text(_log4j_properties(data_dir))

        cluster_id = _formatted_cluster_id(data_dir)
        if cluster_id is None:
            cluster_id = str(record.get("cluster_id") or new_cluster_id())
            if progress:
                progress(f"Formatting a KRaft log dir in {_log_dir(data_dir)}")
            _format_log_dir(java_path, libs, data_dir, cluster_id)

        cmd = [
            java_path,
            "-Xms128m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={_logs_dir(data_dir)}",
            f"-Dlog4j.configuration=file:{kafka_dir / 'log4j.properties'}",
            "-cp",
            str(libs / "*"),
            _MAIN_CLASS,
            str(_properties_file(data_dir)),
        ]
        if progress:
            progress(f"Starting Apache Kafka {KAFKA_VERSION} on {HOST}:{port}")
        with _out_file(data_dir).open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=kafka_dir,
                start_new_session=True,
                close_fds=True,
            )
        _children[proc.pid] = proc
        bootstrap = f"{HOST}:{port}"
        record = {
            "bootstrap": bootstrap,
            "pid": proc.pid,
            "version": KAFKA_VERSION,
            "controller_port": controller_port,
            "port": port,
            "cluster_id": cluster_id,
            "started_at": time.time(),
        }
        _write_record(data_dir, record)
        try:
            _wait_ready(proc.poll, data_dir, port, bootstrap, timeout, f"pid {proc.pid}")
        except BaseException:
            _kill_child(proc)
            record["pid"] = None
            _write_record(data_dir, record)
            raise
        return _info(data_dir, record, running=True)


def _choose_ports(
    data_dir: Path, record: dict[str, Any], port: int | None, controller_port: int | None
) -> tuple[int, int]:
    recorded_port = record.get("port")
    recorded_controller = record.get("controller_port")
    chosen: list[int] = []
    for wanted, recorded, label in (
        (port, recorded_port, "broker"),
        (controller_port, recorded_controller, "controller"),
    ):
        if wanted is not None:
            if port_in_use(wanted) or wanted in chosen:
                raise LocalKafkaError(
                    f"port {wanted} on {HOST} is already in use: choose another "
                    f"{'--port' if label == 'broker' else 'controller port'} or stop what "
                    "listens there"
                )
            chosen.append(wanted)
        elif recorded:
            if port_in_use(int(recorded)):
                raise LocalKafkaError(
                    f"port {recorded}, recorded for the local Kafka {label} of {data_dir}, is "
                    "now used by another process: stop that process, or pass another port "
                    "(--port) to move the broker (clients must then use the new address)"
                )
            chosen.append(int(recorded))
        else:
            candidate = free_port()
            while candidate in chosen:
                candidate = free_port()
            chosen.append(candidate)
    return chosen[0], chosen[1]


def _terminate(pid: int, data_dir: Path, grace: float) -> None:
    """SIGTERM ``pid`` (our broker), wait up to ``grace`` seconds, then SIGKILL it."""
    if not _is_our_broker(pid, data_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        log.warning("the local Kafka broker (pid %d) ignored SIGTERM; killing it", pid)
        if _is_our_broker(pid, data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not _pid_alive(pid):
                break
            time.sleep(0.05)
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def _kill_child(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a broker process this process started (no pid checks needed)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _children.pop(proc.pid, None)


def stop(data_dir: Path | str, *, grace: float = STOP_GRACE_SECONDS) -> bool:
    """Stop the local broker of ``data_dir``; return whether one was running.

    Only the recorded pid is signalled, and only after checking that it is this data
    dir's ``kafka.Kafka`` JVM (SIGTERM, then SIGKILL after ``grace`` seconds). The
    record keeps the address (a later start reuses its ports) and loses the pid.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    with _locked(_kafka_dir(data_dir) / ".lock"):
        record = _read_record(data_dir)
        if not record or not record.get("pid"):
            return False
        pid = int(record["pid"])
        running = _is_our_broker(pid, data_dir)
        if running:
            _terminate(pid, data_dir, grace)
        else:
            log.info("the recorded broker pid %d is not running (stale record)", pid)
        record["pid"] = None
        _write_record(data_dir, record)
        return running


def status(data_dir: Path | str) -> BrokerInfo | None:
    """The recorded broker of ``data_dir`` (``running`` says whether it is up), or None
    when no broker was ever started there."""
    data_dir = Path(data_dir).expanduser().resolve()
    record = _read_record(data_dir)
    if not record or "bootstrap" not in record:
        return None
    pid = record.get("pid")
    return _info(data_dir, record, running=_is_our_broker(pid, data_dir))
