"""storage.identity's rows: the adoption request and result, the foreign orders, the meta facts."""

from storage import identity
from storage.rows import AdoptionRequest, ForeignOrder, KeyValue


def test_an_adoption_request_waits_then_its_result_replaces_it(db):
    assert identity.pending_adoption(db) is None and identity.adoption_result(db) is None
    identity.request_adoption(db)
    request = identity.pending_adoption(db)
    assert isinstance(request, AdoptionRequest) and request.at
    identity.finish_adoption(db, "adopted 1 positions")
    assert identity.pending_adoption(db) is None
    assert identity.adoption_result(db) == "adopted 1 positions"
    identity.request_adoption(db)  # a new request clears the old answer
    assert identity.adoption_result(db) is None


def test_foreign_orders_are_recorded_once_per_perm_id(db):
    identity.record_foreign(
        db, [ForeignOrder(perm_id=7, order_ref=None, order_id=3, status="Submitted")]
    )
    identity.record_foreign(
        db, [{"perm_id": 7, "order_ref": "x", "order_id": 3, "status": "PreSubmitted"}]
    )
    [row] = identity.foreign_orders(db)
    assert (row.perm_id, row.order_ref, row.status) == (7, "x", "PreSubmitted") and row.adopted_at
    assert identity.foreign_perm_ids(db) == {7}


def test_meta_facts_by_key_and_as_rows(db):
    assert identity.ensure(db, "") == identity.NEW
    identity.mark_damaged(db, "tables recreated empty: positions")
    entries = identity.meta_entries(db)
    assert all(isinstance(e, KeyValue) for e in entries)
    facts = identity.meta(db)
    assert facts == {e.key: e.value for e in entries}
    assert facts["damaged"] == "tables recreated empty: positions" and len(facts["db_id"]) == 32
    identity.clear_damaged(db)
    assert "damaged" not in identity.meta(db)
