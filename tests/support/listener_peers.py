"""Real DICOM peers for the listener's tests and benchmark, confined to loopback.

dcmtk's ``storescp`` has no bind-address option and Orthanc listens on every interface, so every
peer (and the listener itself) runs inside a private network namespace whose only interface is
``lo``: nothing in it can be reached from, or reach, any other host.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from app.listener.jobs import JOB_PROCESS_NAME

ROOT = Path(__file__).resolve().parents[2]
LISTENER_AE, SENDER_AE, PACS_AE = "BIOMEDCLIP", "STORESCU", "PACS"
LISTENER_PORT, PACS_PORT, ORTHANC_HTTP_PORT = 11112, 11113, 8042
#: dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment (measured here:
#: storescu -> storescp 11 instances/s without it, ~500/s with it).
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.05) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def map_jobs(pid: int) -> list[int]:
    """The MAP job processes below ``pid`` (forked from the listener's warm process, named ``map-job``), zombies excluded."""
    children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    return [c for c in children if _running_name(c) == JOB_PROCESS_NAME] + [job for c in children for job in map_jobs(c)]


def _running_name(pid: int) -> str:
    """``pid``'s name (comm), or "" once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return "" if stat.rsplit(")", 1)[1].split()[0] == "Z" else Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


class LoopbackNamespace:
    """A new network namespace with only ``lo`` up; ``command`` runs a program inside it."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        own = os.readlink("/proc/self/ns/net")
        path = f"/proc/{self._holder.pid}/ns/net"
        wait_for(lambda: os.readlink(path) != own, 5, "the network namespace")  # unshare has run
        self.path = path
        subprocess.run(self.command(["ip", "link", "set", "lo", "up"]), check=True)

    @staticmethod
    def available() -> bool:
        try:
            return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
        except FileNotFoundError:
            return False

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *map(str, argv)]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), capture_output=True, text=True, env=PEER_ENV, **kwargs)

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), env={**PEER_ENV, **(env or {})}, **kwargs)

    def close(self) -> None:
        self._holder.kill()
        self._holder.wait()


def listener_config(workdir: Path, model_dir: Path, quiet_period_s: float, **settings: object) -> Path:
    config = {
        "ae_title": LISTENER_AE,
        "port": LISTENER_PORT,
        "allowed_calling_ae_titles": [SENDER_AE],
        "spool_dir": str(workdir / "spool"),
        "output_dir": str(workdir / "output"),
        "model_dir": str(model_dir),
        "quiet_period_s": quiet_period_s,
        "destination": f"{PACS_AE}@127.0.0.1:{PACS_PORT}",
        "delivery_initial_backoff_s": 0.5,
        "delivery_max_backoff_s": 2.0,
        "min_free_bytes": 64 * 2**20,
        **settings,
    }
    path = workdir / "listener.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class ListenerProcess:
    """``python -m app.listener --config FILE`` inside the namespace, logging to ``log``; the code of
    the source tree ``tree`` (another checkout, to compare two versions)."""

    def __init__(self, ns: LoopbackNamespace, config: Path, log: Path, tree: Path = ROOT) -> None:
        self.ns, self.config, self.log, self.tree = ns, config, log, tree
        self.process: subprocess.Popen | None = None

    def start(self) -> ListenerProcess:
        """Start it and wait until it listens (it writes ``--port-file`` then)."""
        port_file = self.log.with_suffix(".port")
        port_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = self.ns.popen([sys.executable, "-m", "app.listener", "--config", self.config, "--port-file", port_file],
                                         cwd=self.tree, env={"PYTHONPATH": str(self.tree)}, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_file.exists() or self.process.poll() is not None, 120, "the listener to listen", 0.1)
        if self.process.poll() is not None:
            raise RuntimeError(f"the listener exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        return self

    @property
    def pid(self) -> int:
        """The listener's own pid (nsenter execs it, so it is the child's pid)."""
        assert self.process is not None
        return self.process.pid

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def echo(ns: LoopbackNamespace, calling_ae: str = SENDER_AE, port: int = LISTENER_PORT, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    return ns.run(["echoscu", *extra, "-aet", calling_ae, "-aec", LISTENER_AE, "127.0.0.1", port], timeout=30)


def storescu(ns: LoopbackNamespace, files: Sequence[Path] | Path, calling_ae: str = SENDER_AE,
             extra: Sequence[str] = (), timeout_s: float = 600) -> subprocess.CompletedProcess:
    """dcmtk storescu: one association sending ``files`` (or a folder, recursively)."""
    inputs = ["+sd", "+r", files] if isinstance(files, Path) else list(files)
    return ns.run(["storescu", *extra, "-aet", calling_ae, "-aec", LISTENER_AE, "127.0.0.1", LISTENER_PORT, *inputs], timeout=timeout_s)


def storescu_popen(ns: LoopbackNamespace, files: Sequence[Path]) -> subprocess.Popen:
    return ns.popen(["storescu", "-aet", SENDER_AE, "-aec", LISTENER_AE, "127.0.0.1", LISTENER_PORT, *files],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class DcmtkPacs:
    """dcmtk ``storescp`` playing the PACS: every received instance lands in ``folder``. With ``tls``
    (storescp's TLS options) it accepts TLS only; ``echo_tls`` are echoscu's, to see it is up."""

    def __init__(self, ns: LoopbackNamespace, folder: Path, tls: Sequence[object] = (), echo_tls: Sequence[object] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.process = ns.popen(["storescp", *tls, "-aet", PACS_AE, "-od", folder, PACS_PORT],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: ns.run(["echoscu", *echo_tls, "-aec", PACS_AE, "127.0.0.1", PACS_PORT]).returncode == 0, 30, "storescp")

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class OrthancPacs:
    """Orthanc playing the PACS, its DICOM and HTTP ports inside the namespace only; every other
    setting is Orthanc's default. ``modalities`` (name -> [AE title, host, port]) are the peers it
    can push to (``POST /modalities/{name}/store``); ``settings`` are further configuration options
    (plugins, their sections)."""

    def __init__(self, ns: LoopbackNamespace, workdir: Path, modalities: dict[str, list[object]] | None = None,
                 settings: dict[str, object] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "listener-test", "DicomAet": PACS_AE, "DicomPort": PACS_PORT, "HttpPort": ORTHANC_HTTP_PORT,
            "StorageDirectory": str(workdir / "storage"), "IndexDirectory": str(workdir / "index"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "Plugins": [], "DicomModalities": modalities or {}, **(settings or {}),
        }
        (workdir / "orthanc.json").write_text(json.dumps(config))
        self.ns = ns
        self.process = ns.popen(["Orthanc", workdir / "orthanc.json"], stdout=open(workdir / "orthanc.log", "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/system") is not None, 60, "Orthanc's REST API", 0.2)

    def get(self, path: str, raw: bool = False) -> object:
        url = f"http://127.0.0.1:{ORTHANC_HTTP_PORT}{urllib.parse.quote(path, safe='/?=&')}"
        result = subprocess.run(self.ns.command(["curl", "-sf", url]), capture_output=True)
        if result.returncode != 0:
            return None
        return result.stdout if raw else json.loads(result.stdout)

    def post(self, path: str, body: bytes) -> dict:
        """POST ``body`` to the REST API; its JSON answer (a failure raises, with Orthanc's message)."""
        url = f"http://127.0.0.1:{ORTHANC_HTTP_PORT}{urllib.parse.quote(path)}"
        result = subprocess.run(self.ns.command(["curl", "-s", "--fail-with-body", "--data-binary", "@-", url]), input=body, capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"POST {path}: {result.stdout.decode(errors='replace')[-2000:]}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def make_ct_studies(folder: Path, studies: int, series_per_study: int, instances_per_series: int) -> dict[str, list[Path]]:
    """Copies of pydicom's CT_small (128×128 16-bit CT, 39 KB) as distinct studies, series and
    instances (fresh UIDs, slice positions); returns Study Instance UID -> files."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    made: dict[str, list[Path]] = {}
    for s in range(studies):
        study_uid = generate_uid()
        for r in range(series_per_study):
            series_uid = generate_uid()
            for i in range(instances_per_series):
                ds = copy.deepcopy(template)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.PatientID, ds.AccessionNumber = f"LSTN{s:04d}", f"ACC{s:04d}"
                ds.SeriesNumber, ds.InstanceNumber = r + 1, i + 1
                ds.ImagePositionPatient = [0.0, 0.0, float(i)]
                path = folder / f"study{s}" / f"series{r}" / f"{i:04d}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                made.setdefault(study_uid, []).append(path)
    return made


def make_dose_report(like: Path, folder: Path) -> Path:
    """A CT dose report as scanners file it: a screenshot stored as Secondary Capture Image Storage
    (PS3.3 A.8.1) in its own series of the study of ``like``, Burned In Annotation YES. The default
    burned-in-annotation policy refuses it, so the app exits 3 (SR written, a file refused)."""
    ds = pydicom.dcmread(like)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), "OT", 999, 1
    ds.ImageType, ds.ConversionType, ds.BurnedInAnnotation = ["DERIVED", "SECONDARY", "OTHER"], "WSD", "YES"
    ds.SeriesDescription = "Dose Report"
    path = folder / "dose-report.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_truncated_copy(like: Path, folder: Path, keep: float = 0.6) -> Path:
    """Another instance of the series of ``like`` (its own SOP Instance UID) whose file ends after
    ``keep`` of its bytes, inside the pixel data: a transfer cut short."""
    ds = pydicom.dcmread(like)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path = folder / "truncated.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * keep)])
    return path


#: Non-image instances a whole-study push carries (PS3.4 Annex B.5): prior report, key images,
#: display state, a scanned requisition.
NON_IMAGE_STORAGE = {
    "prior-report": ("1.2.840.10008.5.1.4.1.1.88.11", "SR"),  # Basic Text SR Storage
    "key-images": ("1.2.840.10008.5.1.4.1.1.88.59", "KO"),  # Key Object Selection Document Storage
    "presentation-state": ("1.2.840.10008.5.1.4.1.1.11.1", "PR"),  # Grayscale Softcopy Presentation State Storage
    "requisition": ("1.2.840.10008.5.1.4.1.1.104.1", "DOC"),  # Encapsulated PDF Storage
}


def make_non_image_instances(folder: Path, like: Path) -> list[Path]:
    """One instance of each ``NON_IMAGE_STORAGE`` class in the study (and patient) of ``like``, each in
    its own series; only the attributes that name them, which is all a Storage SCP looks at."""
    image = pydicom.dcmread(like, stop_before_pixels=True)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (sop_class, modality) in NON_IMAGE_STORAGE.items():
        ds = pydicom.Dataset()
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
            if keyword in image:
                setattr(ds, keyword, image.data_element(keyword).value)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), modality, 900, 1
        if name == "requisition":
            ds.MIMETypeOfEncapsulatedDocument, ds.EncapsulatedDocument = "application/pdf", b"%PDF-1.4\n%%EOF\n"
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        made.append(path)
    return made
