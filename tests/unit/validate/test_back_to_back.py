"""The validate stage validates the documents of its handlers in flight back to back
(services/validate/service.py ``BackToBack``): nothing else runs between two validations of a batch,
a batch is never larger than its cap, every document still gets its own verdict, and each is
validated in its own handler's context (what the validator logs carries that record's trace)."""

from __future__ import annotations

import asyncio
import contextvars

from services.validate.cfdi import CfdiValidator, ValidationResult
from services.validate.service import BackToBack
from tooling.issuers.defects import Defect
from tooling.issuers.generator import InvoiceGenerator

_RECORD: contextvars.ContextVar[int] = contextvars.ContextVar("record", default=-1)


class _Spy(CfdiValidator):
    """The real validator, noting at each call how many loop iterations had passed and whose
    context it ran in."""

    def __init__(self, inner: CfdiValidator, clock: list[int]) -> None:
        self.__dict__.update(inner.__dict__)
        self.calls: list[tuple[bytes, int, int]] = []
        self._clock = clock

    def validate(self, data: bytes) -> ValidationResult:
        self.calls.append((data, self._clock[0], _RECORD.get()))
        return super().validate(data)


class _Batches(BackToBack):
    """Notes each batch's documents."""

    def __init__(self, validator: CfdiValidator, max_batch: int) -> None:
        super().__init__(validator, max_batch)
        self.batches: list[list[bytes]] = []

    async def _run(self, docs: list[tuple[bytes, contextvars.Context]]) -> list[ValidationResult | Exception]:
        self.batches.append([xml for xml, _ in docs])
        return await super()._run(docs)


def test_concurrent_documents_are_validated_back_to_back_each_with_its_own_verdict(
        validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    defects = [None, Defect.TOTAL_MISMATCH, None, Defect.SELLO_TAMPERED, Defect.XML_TRUNCATED]
    docs = [generator.generate(i, defect=defects[i % len(defects)]).xml for i in range(20)]
    alone = [validator.validate(x) for x in docs]
    clock = [0]
    spy = _Spy(validator, clock)
    b2b = _Batches(spy, max_batch=8)

    async def handler(i: int) -> ValidationResult:
        _RECORD.set(i)  # as the runtime sets each record's trace context
        return await b2b.validate(docs[i])

    async def main() -> list[ValidationResult]:
        async def tick() -> None:  # one step per loop iteration: anything else that gets to run
            while True:
                clock[0] += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.sleep(0)
            return await asyncio.gather(*(handler(i) for i in range(len(docs))))
        finally:
            ticker.cancel()

    results = asyncio.run(main())

    assert [(r.verdict, r.rules) for r in results] == [(r.verdict, r.rules) for r in alone]
    assert any(not r.is_valid for r in results) and any(r.is_valid for r in results)
    assert [d for d, _, _ in spy.calls] == docs  # each once, in the order submitted
    assert [rec for _, _, rec in spy.calls] == list(range(len(docs)))  # each in its handler's context
    assert [len(b) for b in b2b.batches] == [8, 8, 4]
    at = {d: tick for d, tick, _ in spy.calls}
    for batch in b2b.batches:  # nothing else ran between two validations of a batch
        assert len({at[d] for d in batch}) == 1


class _Crashes(CfdiValidator):
    """The real validator, except that one document makes it raise (it never does; a bug might)."""

    def __init__(self, inner: CfdiValidator, poison: bytes) -> None:
        self.__dict__.update(inner.__dict__)
        self._poison = poison

    def validate(self, data: bytes) -> ValidationResult:
        if data == self._poison:
            raise RuntimeError("validator bug")
        return super().validate(data)


def test_a_document_that_crashes_the_validator_fails_alone_not_its_whole_batch(
        validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    docs = [generator.generate(i, defect=None).xml for i in range(6)]
    b2b = BackToBack(_Crashes(validator, docs[2]), max_batch=8)

    async def main() -> list[ValidationResult | BaseException]:
        return await asyncio.gather(*(b2b.validate(x) for x in docs), return_exceptions=True)

    outcomes = asyncio.run(main())

    assert isinstance(outcomes[2], RuntimeError)
    others = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(o, ValidationResult) and o.is_valid for o in others)


class _Counting(BackToBack):
    def __init__(self, validator: CfdiValidator) -> None:
        super().__init__(validator)
        self.submitted = 0

    async def validate(self, xml: bytes) -> ValidationResult:
        self.submitted += 1
        return await super().validate(xml)


def test_a_priority_record_is_validated_at_once_and_a_normal_one_in_a_batch(
        validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    from services.validate.service import ValidateStage
    from shared.domain.messages import DocumentRef, ValidatedDocument
    from shared.runtime import Message
    from shared.settings import Settings

    stage = ValidateStage.__new__(ValidateStage)  # no servers: the handler's inline-document path only
    stage.settings, stage.validator, stage.s3 = Settings(), validator, None
    batches = stage._validations = _Counting(validator)
    xml = generator.generate(1, defect=None).xml
    ref = DocumentRef(record_id="r-1", region="north", path="a/1.xml", sha256="0" * 64, size=len(xml), xml=xml)

    def message(priority: bool) -> Message:
        return Message("fiscal.validate", 0, 0, b"r-1", ref.encode(), {}, 0, priority=priority)

    for priority, submitted in ((True, 0), (False, 1)):
        [out] = asyncio.run(stage.handle(message(priority)))
        assert batches.submitted == submitted
        assert ValidatedDocument.decode(out.value).facts.uuid  # a verdict either way: valid, facts sent on
