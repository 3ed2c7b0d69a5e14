"""reqAccountSummary as IB answers it: the requested tags under IB's names, nothing for a name IB
does not know, an end marker; then only what changed, while the subscription lasts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ibapi.account_summary_tags import AccountSummaryTags
from serverkit import Client, new_server

from sim.protocol import In, Out

ALL_TAGS = AccountSummaryTags.AllTags.split(",")
# Names IB does not answer (ibapi's own misspellings among them, ib_insync #588/#589) and junk.
UNKNOWN = ["ReqTEquity", "ReqTMargin", "PreviousEquityWithLoanValue", "NoSuchTag", " "]
# What IB answers each requested name as; the others under their own name.
ANSWERED_AS = {"Leverage": "Leverage-S", "ReqTEquity": None, "ReqTMargin": None}


def _rows(messages: list[list[str]], req_id: int) -> list[tuple[str, str, str, str]]:
    return [
        (m[3], m[4], m[5], m[6])
        for m in messages
        if m[0] == str(int(Out.ACCOUNT_SUMMARY)) and m[2] == str(req_id)
    ]


def _ends(messages: list[list[str]], req_id: int) -> int:
    return sum(
        1 for m in messages if m[0] == str(int(Out.ACCOUNT_SUMMARY_END)) and m[2] == str(req_id)
    )


def _expected(asked: list[str]) -> set[str]:
    out = set()
    for tag in asked:
        if tag in ALL_TAGS or tag in ("RegTEquity", "RegTMargin"):
            answered = ANSWERED_AS.get(tag, tag)
            if answered:
                out.add(answered)
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(ALL_TAGS + UNKNOWN + ["RegTEquity", "RegTMargin"]), min_size=0, max_size=12
    )
)
def test_the_answer_is_the_requested_known_tags_then_the_end(asked: list[str]) -> None:
    server = new_server()
    client = Client(server)
    try:
        client.start_api()
        answer = client.send([In.REQ_ACCOUNT_SUMMARY, 1, 7, "All", ",".join(asked)])
        rows = _rows(answer, 7)
        assert {tag for _, tag, _, _ in rows} == _expected(asked)
        assert len(rows) == len({(tag, cur) for _, tag, _, cur in rows})  # each once
        assert all(account == "DU123456" for account, _, _, _ in rows)
        assert _ends(answer, 7) == 1
        assert answer[-1][0] == str(int(Out.ACCOUNT_SUMMARY_END))
    finally:
        client.close()


def test_a_push_sends_only_what_changed_and_nothing_after_the_cancel(server, client) -> None:
    client.start_api()
    client.send([In.REQ_ACCOUNT_SUMMARY, 1, 7, "All", AccountSummaryTags.AllTags])
    client.send([In.REQ_ACCOUNT_SUMMARY, 1, 8, "All", "AccountType,HighestSeverity"])
    client.writer.data.clear()
    server.book.cash -= 1234.5  # what a fill does to the account, without a market
    server._push_account(server.clock.now())
    pushed = client.send([In.REQ_CURRENT_TIME, 1])
    changed = {tag for _, tag, _, _ in _rows(pushed, 7)}
    assert {"TotalCashValue", "NetLiquidation", "AvailableFunds", "FullAvailableFunds"} <= changed
    assert "AccountType" not in changed and "GrossPositionValue" not in changed
    assert _ends(pushed, 7) == 1
    assert _rows(pushed, 8) == [] and _ends(pushed, 8) == 0  # nothing of it changed
    client.send([In.CANCEL_ACCOUNT_SUMMARY, 1, 7])
    server.book.cash -= 1.0
    server._push_account(server.clock.now())
    assert _rows(client.send([In.REQ_CURRENT_TIME, 1]), 7) == []
