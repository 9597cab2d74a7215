"""What the report API's seed-contract routes answer, as pydantic models for the OpenAPI document
only: the handlers build the JSON themselves (services/report/queries.py), and
tests/integration/report/test_seed_contract.py checks that the two name the same fields.

The seed contract: the read routes of the Go system this one replaces (seed 000), kept so its
clients work unchanged (docs/seed-api.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.domain.records import RecordStatus


class FiscalRecord(BaseModel):
    """One record, in the Go system's fields (null where fiscalflow does not know the value)."""

    uuid: str | None = Field(description="The TFD UUID (upper case); null until the document was read.")
    invoice_id: str | None = Field(description="Serie + Folio of the CFDI: always null, no stage keeps them yet.")
    issuer_rfc: str | None
    receiver_rfc: str | None = Field(description="Null for records archived before migration 0070.")
    amount: str | None = Field(description="Total in ``currency``, an exact decimal string.")
    currency: str | None = Field(description="Moneda.")
    issuance_date: str | None = Field(
        description="Fecha as written (local time of the place of issue, no offset); a date only for records "
                    "archived before migration 0070.")
    status: RecordStatus
    file_url: str | None = Field(description="``s3://<bucket>/<key>`` of the archived document (archived only).")
    checksum: str | None = Field(description="SHA-256 of the document as downloaded (not of the gzip).")
    compressed_size: int | None = Field(description="Bytes of the archived gzip.")
    processed_at: str | None = Field(description="When the registry recorded the final status (archived, rejected, "
                                                 "duplicate); the list is newest first by it.")
    error_message: str | None = Field(description="Why it was rejected (rejected and duplicate only).")
    retry_count: int = Field(description="Passes started again after the first (re-drives, replays, resubmitted "
                                         "jobs); retries inside a stage are not counted.")
    last_retry_at: str | None = Field(description="When the last of those passes started.")
    record_id: str = Field(description="fiscalflow's record id (not in the Go system's shape).")
    reason: str | None = Field(description="The rejection's reason code (not in the Go system's shape).")


class FiscalRecords(BaseModel):
    count: int = Field(description="How many records this answer holds (at most ``limit``).")
    records: list[FiscalRecord]


class Group(BaseModel):
    tipo: str
    moneda: str
    count: int
    total: str
    total_mxn: str


class Issuer(BaseModel):
    rfc: str
    count: int
    total_mxn: str


class IssuerTotals(BaseModel):
    record_count: int
    total_amount: str = Field(description="MXN, an exact decimal string.")


class DailyReport(BaseModel):
    date: str
    groups: list[Group] = Field(description="Per TipoDeComprobante and Moneda.")
    issuers: list[Issuer] = Field(description="Per issuer, the largest MXN total first.")
    record_count: int = Field(description="Archived documents of the day (seed contract).")
    total_amount: str = Field(description="Their MXN total, an exact decimal string (seed contract).")
    by_issuer: dict[str, IssuerTotals] = Field(description="Per issuer RFC (seed contract).")
    last_update: str | None = Field(
        description="When the registry archived the day's last document: its processed_at in /api/v1/fiscal/records "
                    "(seed contract); null if the registry holds none of them archived.")
