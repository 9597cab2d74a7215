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
    invoice_id: str | None = Field(description="Serie + Folio of the CFDI as written, joined; null when it has "
                                        "neither, and for records archived before migration 0090.")
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
    region: str = Field(description="The issuer region (SFTP server) the document comes from (not in the Go "
                                    "system's shape).")


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


class RegionTotals(BaseModel):
    region: str = Field(description="The issuer region; '' for report rows written before the reports kept "
                                    "regions, until `fiscalflow report rebuild` sets theirs.")
    record_count: int = Field(description="Archived documents.")
    total_mxn: str = Field(description="Their MXN total, an exact decimal string.")
    rejected: int | None = Field(description="Rejected records (every day only: null over a range of days).")
    duplicate: int | None = Field(description="Duplicate records (every day only: null over a range of days).")


class RegionsReport(BaseModel):
    """``GET /api/v1/reports/regions`` (not part of the seed contract)."""

    from_: str | None = Field(alias="from", description="First day of Fecha; null: every day.")
    to: str | None = Field(description="Last day of Fecha, inclusive; null: every day.")
    regions: list[RegionTotals] = Field(description="Per region, by name; only regions with records.")
    record_count: int = Field(description="Archived documents of every region: the regions' sum.")
    total_mxn: str = Field(description="Their MXN total: the regions' sum.")


class RecordLine(BaseModel):
    """One line (``cfdi:Concepto``) of an archived document; amounts are exact decimal strings."""

    line: int = Field(description="Position among the document's Conceptos, from 1.")
    product_code: str | None = Field(description="ClaveProdServ.")
    description: str = Field(description="Descripcion, as written.")
    quantity: str = Field(description="Cantidad, exact (no trailing zeros).")
    unit_price: str = Field(description="ValorUnitario, exact, at least two decimals.")
    amount: str = Field(description="Importe (Cantidad x ValorUnitario, before Descuento), exact, at least two "
                                    "decimals.")
    discount: str | None = Field(description="Descuento; null when the line has none.")
    tax_rate: str | None = Field(description="TasaOCuota of the line's IVA (002) Traslado, e.g. 0.16; null when the "
                                             "line has no IVA Traslado or it is Exento.")


class RecordLines(BaseModel):
    """``GET /api/v1/records/{record_id}/lines`` (not part of the seed contract)."""

    record_id: str
    uuid: str = Field(description="The document's TFD UUID (upper case).")
    count: int = Field(description="How many lines the document has (all of them are listed).")
    lines: list[RecordLine] = Field(description="In document order.")
