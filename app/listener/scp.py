"""The Storage SCP (PS3.4 Annex B) and Verification SCP (PS3.4 Annex A) of the listener, on pynetdicom.

Association admission (PS3.8 §9.3.4 A-ASSOCIATE-RJ) happens before any data set is received:
an unknown calling AE title or source address is rejected permanently; a nearly full spool is
rejected transiently (local limit exceeded), so the sender retries later, and so are associations
beyond ``max_associations`` established ones. Connection limits: ``app/listener/connections.py``.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from functools import partial
from io import BytesIO
from typing import cast

from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    EnhancedXAImageStorage,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    RLETransferSyntaxes,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    UncompressedTransferSyntaxes,
    XRayAngiographicImageStorage,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import AllStoragePresentationContexts

from app.listener.config import ALL_STORAGE, SELECTED_IMAGES, ListenerConfig, TlsSettings
from app.listener.connections import (
    GuardedAssociationServer,
    bound_instance_size,
    bound_pdu_length,
    describe_uid,
    log_silent_connections,
    peer_address,
)
from app.listener.file_format import file_meta
from app.listener.instance_uids import STATUS_CANNOT_UNDERSTAND, HeaderTooLong, instance_uids, mismatch
from app.listener.spool import Spool
from app.listener.tcp import LOW_LATENCY_HANDLER
from app.listener.urgency import requested_procedure_priority
from app.settings import AppSettings

logger = logging.getLogger(__name__)

#: Image Storage SOP Classes (PS3.4 Annex B.5) by the Modality (0008,0060) their instances carry.
IMAGE_STORAGE_BY_MODALITY: dict[str, tuple[str, ...]] = {
    "CR": (ComputedRadiographyImageStorage,),
    "DX": (DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing),
    "MG": (DigitalMammographyXRayImageStorageForPresentation, DigitalMammographyXRayImageStorageForProcessing),
    "CT": (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage),
    "MR": (MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage),
    "US": (UltrasoundImageStorage, UltrasoundMultiFrameImageStorage),
    "OT": (SecondaryCaptureImageStorage,),
    "SC": (SecondaryCaptureImageStorage, MultiFrameSingleBitSecondaryCaptureImageStorage,
           MultiFrameGrayscaleByteSecondaryCaptureImageStorage, MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
           MultiFrameTrueColorSecondaryCaptureImageStorage),
    "XA": (XRayAngiographicImageStorage, EnhancedXAImageStorage),
    "NM": (NuclearMedicineImageStorage,),
    "PT": (PositronEmissionTomographyImageStorage, EnhancedPETImageStorage, LegacyConvertedEnhancedPETImageStorage),
}


def storage_sop_classes(setting: str | tuple[str, ...], series_selection_rules: str) -> tuple[str, ...]:
    """The Storage SOP Classes the SCP accepts, per the ``storage_sop_classes`` setting; presentation
    contexts of other SOP classes are rejected (abstract syntax not supported, PS3.8 §9.3.3.2)."""
    if setting == ALL_STORAGE:
        return tuple(context.abstract_syntax for context in AllStoragePresentationContexts if context.abstract_syntax)
    if setting == SELECTED_IMAGES:
        return selected_image_sop_classes(series_selection_rules)
    return tuple(setting)


def selected_image_sop_classes(series_selection_rules: str) -> tuple[str, ...]:
    """The Image Storage SOP Classes of the modalities that the app's series selection accepts
    (``app/config/series_selection.json``, the one definition): what the app would use."""
    patterns = [rule.get("conditions", {}).get("Modality") for rule in json.loads(series_selection_rules)["selections"]]
    accepted: dict[str, None] = {}  # ordered, without repeats
    for modality, sop_classes in IMAGE_STORAGE_BY_MODALITY.items():
        # a rule without a Modality condition selects every modality
        if any(pattern is None or re.search(pattern, modality) for pattern in patterns):
            accepted.update(dict.fromkeys(sop_classes))
    return tuple(accepted)


#: Native (uncompressed, deflated, big endian) and the encapsulated image transfer syntaxes (PS3.5 §10,
#: Annex A) that pydicom and its installed pixel-data plugins decode. Data sets are spooled as received.
ACCEPTED_TRANSFER_SYNTAXES = [
    *UncompressedTransferSyntaxes, *JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes, *RLETransferSyntaxes,
]

VERIFICATION_SOP_CLASS = UID("1.2.840.10008.1.1")  # PS3.4 A.4

# A-ASSOCIATE-RJ (result, source, reason/diag.), PS3.8 Table 9-21.
REJECT_CALLING_AE_TITLE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling-AE-title-not-recognized
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called-AE-title-not-recognized
REJECT_SOURCE_ADDRESS = (0x01, 0x01, 0x01)  # rejected-permanent, service-user, no-reason-given
REJECT_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), local-limit-exceeded

# C-STORE response statuses, PS3.4 Annex B.2.3.
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700


class ServerTlsContext(ssl.SSLContext):
    """TLS for accepted connections, with a time limit on the handshake: pynetdicom wraps sockets in
    its accept loop, so a client that connects and stays silent would otherwise block every other."""

    handshake_timeout_s = 10.0

    def wrap_socket(self, sock, *args, **kwargs):
        sock.settimeout(self.handshake_timeout_s)
        return super().wrap_socket(sock, *args, **kwargs)


def server_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ServerTlsContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195, as PS3.15 Annex B's TLS profiles require
    context.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates:
        context.load_verify_locations(tls.ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StorageSCP:
    def __init__(self, config: ListenerConfig, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.ae = AE(ae_title=config.ae_title)
        # pynetdicom's own limit counts every connection; ours (_admit) only established associations.
        self.ae.maximum_associations = config.max_connections
        # Maximum Length Received: pynetdicom's default, 16382, splits a 39 KB CT into three P-DATA-TF
        # PDUs, each decoded in Python (0.1-0.3 ms more CPU time per instance, measured with storescu).
        self.ae.maximum_pdu_size = config.max_pdu_bytes
        self.ae.require_called_aet = True
        self.ae.network_timeout = self.ae.dimse_timeout = config.network_timeout_s
        self.ae.acse_timeout = config.association_request_timeout_s  # the ARTIM timer
        self.ae.add_supported_context(VERIFICATION_SOP_CLASS)
        for sop_class in storage_sop_classes(config.storage_sop_classes, AppSettings.load().series_selection_rules):
            self.ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
        self.server: GuardedAssociationServer | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> int:
        """Listen (non-blocking); returns the bound port."""
        handlers: list[EventHandlerType] = [LOW_LATENCY_HANDLER, (evt.EVT_CONN_OPEN, bound_pdu_length(self.config.max_pdu_bytes)),
                    (evt.EVT_PDU_RECV, bound_instance_size(self.config.max_instance_bytes)),
                    (evt.EVT_REQUESTED, self._admit), (evt.EVT_ACCEPTED, self._accepted), (evt.EVT_C_STORE, self._store),
                    *log_silent_connections(self.config.association_request_timeout_s)]
        # AE.start_server(block=False), with the guarded server class
        server = cast(GuardedAssociationServer, self.ae.make_server((self.config.bind_host, self.config.port), evt_handlers=handlers,
                                     ssl_context=server_tls_context(self.config.tls) if self.config.tls else None,
                                     server_class=GuardedAssociationServer))
        server.max_connections = self.config.max_connections
        server.max_connections_per_address = self.config.max_connections_per_address
        server.read_timeout_s = self.config.network_timeout_s
        self._acceptor = threading.Thread(target=server.serve_forever, name="listener-acceptor", daemon=True)
        self._acceptor.start()
        self.ae._servers.append(server)  # pynetdicom's shutdown() removes it from there
        self.server = server
        return int(server.server_address[1])

    def accepting(self) -> bool:
        """Whether the listening socket is open and its accept loop running (the health check)."""
        server, acceptor = self.server, self._acceptor
        listening = server is not None and server.socket is not None and server.socket.fileno() != -1
        return listening and acceptor is not None and acceptor.is_alive()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def refusal(self, calling_ae_title: str, address: str, called_ae_title: str | None = None) -> tuple[tuple[int, int, int], str] | None:
        """Why an association request must be rejected (A-ASSOCIATE-RJ parameters and a reason), or None."""
        if called_ae_title is not None and called_ae_title.strip() != self.config.ae_title:
            return REJECT_CALLED_AE_TITLE, f"called AE title {called_ae_title.strip()!r} is not {self.config.ae_title!r}"
        if calling_ae_title.strip() not in self.config.allowed_calling_ae_titles:
            return REJECT_CALLING_AE_TITLE, "calling AE title not allowed"
        networks = self.config.allowed_source_addresses
        if networks and not any(peer_address(address) in n for n in networks):
            return REJECT_SOURCE_ADDRESS, "source address not allowed"
        established = sum(1 for a in self.ae.active_associations if a.is_acceptor and a.is_established)
        if established >= self.config.max_associations:
            return REJECT_LIMIT_EXCEEDED, f"max_associations ({self.config.max_associations}) reached"
        spool_refusal = self.spool.refusal()
        if spool_refusal:
            return REJECT_LIMIT_EXCEEDED, spool_refusal
        return None

    def _admit(self, event: Event) -> None:
        """EVT_REQUESTED: send an A-ASSOCIATE-RJ here, before pynetdicom negotiates the association."""
        request = event.assoc.requestor.primitive
        calling = request.calling_ae_title if request is not None else ""
        called = request.called_ae_title if request is not None else ""
        address = event.assoc.requestor.address
        refused = self.refusal(calling, address, called)
        if refused:
            (result, source, reason), why = refused
            logger.warning("Association from %s (calling AE %r) rejected: %s", peer_address(address), calling.strip(), why)
            event.assoc.acse.send_reject(result, source, reason)
            event.assoc.kill()  # as pynetdicom's own rejections do: waits until the A-ASSOCIATE-RJ is sent

    def _accepted(self, event: Event) -> None:
        """EVT_ACCEPTED: one line per SOP class whose presentation context was rejected (PS3.8 §9.3.3.2)."""
        refused = sorted({str(c.abstract_syntax) for c in event.assoc.rejected_contexts if c.abstract_syntax})
        for sop_class in refused:
            logger.warning("Association from %s: presentation context for %s rejected: not in storage_sop_classes "
                           "or no accepted transfer syntax", peer_address(event.assoc.requestor.address), describe_uid(sop_class))

    def _store(self, event: Event) -> int:
        """EVT_C_STORE: acknowledge only once the instance is durably in the spool. The data set is held
        once, in the buffer pynetdicom assembled it in: it is read and written through a view of that
        buffer, never copied (issue 13 item 6)."""
        request = cast(C_STORE, event.request)
        with cast(BytesIO, request.DataSet).getbuffer() as received:  # the data set's bytes as the sender encoded them
            return self._spool(event, request, received)

    def _spool(self, event: Event, request: C_STORE, received: memoryview) -> int:
        context = event.context
        try:
            uids = instance_uids(received, context.transfer_syntax, self.config.max_header_bytes)
        except HeaderTooLong as exc:
            logger.warning("C-STORE refused: %s", exc)
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # a malformed data set raises many kinds; none may escape into pynetdicom's log
            logger.warning("C-STORE refused: the data set cannot be read (%s)", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        refused = mismatch(uids, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), context.abstract_syntax)
        if refused:
            status, why = refused
            logger.warning("C-STORE refused (status 0x%04X): %s", status, why)
            return status
        meta = file_meta(uids.sop_class, uids.sop_instance, context.transfer_syntax)
        refusal = self.spool.refusal(len(meta) + received.nbytes)
        if refusal:
            logger.warning("C-STORE refused: %s", refusal)
            return STATUS_OUT_OF_RESOURCES
        try:
            calling = event.assoc.requestor.ae_title
            urgent = partial(self.config.urgent.matches, calling, request.Priority,
                             partial(requested_procedure_priority, received, context.transfer_syntax, self.config.max_header_bytes))
            self.spool.store(uids.study, uids.sop_instance, (meta, received), self.config.quiet_period_for(calling), urgent)
        except OSError as exc:  # strerror only: the exception's text holds the file name, a UID
            logger.error("C-STORE failed: cannot write to the spool (%s)", exc.strerror)
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS
