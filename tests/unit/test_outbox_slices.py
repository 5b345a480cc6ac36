"""How many claimed rows the outbox sender sends before recording them
(``orderflow.integrations.outbox.slice_rows``): the kill window of a sender."""

from orderflow.integrations import outbox

MANY = {"wms_release": object(), "carrier_tender": object(), "edi_855": object()}


def _row(action: str, n: int = 1) -> tuple:
    return (n, f"{action}:{n}", action, "conn", {}, 0)


def test_a_claim_sent_only_through_batch_endpoints_is_recorded_in_large_slices():
    batch = [_row("wms_release", 1), _row("carrier_tender", 2), _row("edi_855", 3)]
    assert outbox.slice_rows(batch, MANY) == outbox.RECORD_EVERY_BATCHED
    assert outbox.RECORD_EVERY < outbox.RECORD_EVERY_BATCHED < outbox.CLAIM_BATCH


def test_rows_sent_one_request_each_or_not_keyed_keep_the_small_slice():
    assert outbox.slice_rows([_row("wms_release"), _row("email", 2)], MANY) == outbox.RECORD_EVERY
    assert outbox.slice_rows([_row("wms_release_cancel")], MANY) == outbox.RECORD_EVERY
    assert outbox.slice_rows([_row("wms_release")], {}) == outbox.RECORD_EVERY  # test senders
    assert outbox.slice_rows([_row("wms_release")], None) == outbox.RECORD_EVERY
