"""Configuration that cannot surprise: every bad file or variable is refused, naming the field,
before anything opens; the account id is never echoed; live orders need a typed opt-in."""

from __future__ import annotations

import math
import socket
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from configs.settings import LIVE_CONFIRMATION, ConfigError, Settings, load_settings

ACCOUNT = "U7654321"


def base(tmp: Path) -> dict[str, Any]:
    """A valid document whose files all live under `tmp`."""
    return {
        "storage": {"path": str(tmp / "var" / "bot.sqlite")},
        "log": {"json_file": str(tmp / "var" / "bot.jsonl")},
        "risk": {"kill_switch_file": str(tmp / "var" / "KILL")},
        "metrics": {"port": 0},
    }


def refused(tmp: Path, doc: dict[str, Any] | str | bytes, environ=None) -> ConfigError:
    f = tmp / "c.yaml"
    if isinstance(doc, dict):
        doc = yaml.safe_dump(doc)
    f.write_bytes(doc if isinstance(doc, bytes) else doc.encode())
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ=environ or {})
    return err.value


def merged(tmp: Path, **sections: Any) -> dict[str, Any]:
    doc = base(tmp)
    for k, v in sections.items():
        doc[k] = {**doc[k], **v} if isinstance(v, dict) and isinstance(doc.get(k), dict) else v
    return doc


# -- the defects of issue 11, one by one ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dry_run: true\ndry_run: false\n", "'dry_run' is given twice"),
        ("broker:\n  port: 4002\n  port: 4001\n", "'port' is given twice"),
        ("1: x\n", "the key 1 is not a setting's name"),
        ("on: 3\n", "the key True is not a setting's name"),
        ("broker: {null: 3}\n", "the key None is not a setting's name"),
        (
            "broker: {connect_timeout_s: .inf}\n",
            "broker.connect_timeout_s: Input should be a finite",
        ),
        (
            "broker: {connect_timeout_s: .nan}\n",
            "broker.connect_timeout_s: Input should be a finite",
        ),
        ("risk: {paper_equity: 1e400}\n", "risk.paper_equity"),
        ("risk: {max_premium_per_trade: 1.0e+300}\n", "risk.max_premium_per_trade"),
        ("sim: {seed: 100000000000000000000000000000}\n", "sim.seed"),
        ("broker: {timeouts_s: {historical: 0}}\n", "broker.timeouts_s.historical"),
        ("broker: {timeouts_s: {probe: -5}}\n", "broker.timeouts_s.probe"),
        ("broker: {timeouts_s: {snapshot: .inf}}\n", "broker.timeouts_s.snapshot"),
        ("risk: {kill_switch_file: ''}\n", "risk.kill_switch_file: is empty"),
        ("risk: {no_entry_first_minutes: 200, no_entry_last_minutes: 190}\n", "covers the whole"),
        ("symbols: ['.']\n", "'.' is not a US stock symbol"),
        ("symbols: ['1ABC']\n", "'1ABC' is not a US stock symbol"),
        ("symbols: ['BRK.']\n", "is not a US stock symbol"),
        ("broker: {host: ''}\n", "broker.host"),
        ("data: {backfill_1min: '2 days'}\n", "data.backfill_1min"),
    ],
)
def test_each_bad_document_is_refused_naming_the_field(tmp_path, text, expected):
    # Each document is the valid base plus the bad part, so only the bad part can be refused.
    doc = yaml.safe_dump(base(tmp_path)) + text
    if text.startswith(tuple(base(tmp_path))):  # a section of the base given twice otherwise
        section = text.split(":", 1)[0]
        doc = yaml.safe_dump({k: v for k, v in base(tmp_path).items() if k != section}) + text
    err = refused(tmp_path, doc)
    assert any(expected in p for p in err.problems), err.problems


def test_a_kill_switch_file_that_is_a_directory_is_refused(tmp_path):
    err = refused(tmp_path, merged(tmp_path, risk={"kill_switch_file": str(tmp_path)}))
    assert any(p.startswith("risk.kill_switch_file:") and "directory" in p for p in err.problems)


@pytest.mark.parametrize("field", ["storage.path", "log.json_file", "risk.kill_switch_file"])
def test_a_file_under_a_file_cannot_be_created_and_is_refused(tmp_path, field):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    section, key = field.split(".")
    err = refused(tmp_path, merged(tmp_path, **{section: {key: str(blocker / "sub" / "f")}}))
    assert any(p.startswith(field + ":") and "cannot be created" in p for p in err.problems)
    assert not (blocker.parent / "sub").exists()


def test_an_unwritable_directory_is_refused(tmp_path):
    # /proc/1 refuses new entries even to root, so this holds whoever runs the suite.
    err = refused(tmp_path, merged(tmp_path, storage={"path": "/proc/1/optionsbot/db.sqlite"}))
    assert any(p.startswith("storage.path:") and "not writable" in p for p in err.problems)


def test_two_settings_naming_the_same_file_are_refused(tmp_path):
    same = str(tmp_path / "same")
    err = refused(
        tmp_path, merged(tmp_path, storage={"path": same}, risk={"kill_switch_file": same})
    )
    assert any("same file" in p for p in err.problems)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x01\x02binary\xff", "a binary file"),
        (b"dry_run: true\ncaf\xe9: 1\n", "not UTF-8 text"),
        (b"\xff\xfe\xfd", "not UTF-8 text"),
    ],
)
def test_binary_or_non_utf8_files_are_refused(tmp_path, data, expected):
    err = refused(tmp_path, data)
    assert any(expected in p for p in err.problems), err.problems


def test_a_byte_order_mark_is_fine(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(base(tmp_path)).encode())
    assert load_settings(f, environ={}).dry_run is True


@pytest.mark.parametrize(
    ("variable", "guess"),
    [
        ("OPTIONSBOT_DRYRUN", "OPTIONSBOT_DRY_RUN"),
        ("OPTIONSBOT_SYMBOL", "OPTIONSBOT_SYMBOLS"),
        ("optionsbot_dryrun", "OPTIONSBOT_DRY_RUN"),
        ("OPTIONSBOT_ACCOUNT", None),
    ],
)
def test_an_unknown_optionsbot_variable_is_refused_with_a_guess(tmp_path, variable, guess):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(base(tmp_path)))
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ={variable: ACCOUNT})
    text = err.value.render()
    assert variable in text and (guess is None or f"did you mean {guess}?" in text)
    assert ACCOUNT not in text


def test_known_variables_and_mapping_keys_are_accepted(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(base(tmp_path)))
    s = load_settings(
        f,
        environ={
            "OPTIONSBOT_DRY_RUN": "true",
            "OPTIONSBOT_BROKER__TIMEOUTS_S__HISTORICAL": "45",
            "OPTIONSBOT_CRASH_AT": "",  # read by actors/crash.py, not a setting
            "OTHER_THING": "x",
        },
    )
    assert s.broker.timeouts_s["historical"] == 45


@pytest.mark.parametrize(
    "doc",
    [
        {"broker": {"account": 1234567}},
        {"broker": {"account": [ACCOUNT]}},
        {"broker": {"account": f" {ACCOUNT}\n"}},
        {"broker": {"account": ACCOUNT, "port": 99999}},
        {"broker": ACCOUNT},
    ],
)
def test_the_account_is_never_echoed(tmp_path, doc):
    err = refused(tmp_path, merged(tmp_path, **doc))
    assert "1234567" not in err.render() and ACCOUNT not in err.render()


# -- live orders: the opt-in -------------------------------------------------------------------

LIVE = {"enabled": True, "confirm": LIVE_CONFIRMATION}


@pytest.mark.parametrize("port", [4001, 7496, 4002])
def test_live_against_a_gateway_without_the_opt_in_is_refused(tmp_path, port):
    doc = merged(tmp_path, dry_run=False, broker={"mode": "gateway", "port": port})
    err = refused(tmp_path, doc, environ={"OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT})
    assert any(p.startswith("live:") and LIVE_CONFIRMATION in p for p in err.problems)


@pytest.mark.parametrize(
    "live",
    [
        {"enabled": True},
        {"confirm": LIVE_CONFIRMATION},
        {"enabled": True, "confirm": "i accept real orders"},
        {"enabled": True, "confirm": "yes"},
    ],
)
def test_a_half_opt_in_is_refused(tmp_path, live):
    doc = merged(tmp_path, dry_run=False, broker={"mode": "gateway"}, live=live)
    err = refused(tmp_path, doc, environ={"OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT})
    assert any(p.startswith("live:") for p in err.problems)


def test_live_needs_the_account(tmp_path):
    doc = merged(tmp_path, dry_run=False, broker={"mode": "gateway"}, live=LIVE)
    err = refused(tmp_path, doc)
    assert err.problems == [
        "broker.account: live orders need the account id; set OPTIONSBOT_BROKER__ACCOUNT in the"
        " environment"
    ]


@pytest.mark.parametrize(
    "broker", [{"market_data_type": 3}, {"market_data_type": 4}, {"delayed_data_fallback": True}]
)
@pytest.mark.parametrize("mode", ["gateway", "embedded"])
def test_live_with_delayed_data_is_refused(tmp_path, broker, mode):
    doc = merged(tmp_path, dry_run=False, broker={"mode": mode, **broker}, live=LIVE)
    err = refused(tmp_path, doc, environ={"OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT})
    assert any("delayed quotes" in p for p in err.problems)


def test_the_full_opt_in_runs_live(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        yaml.safe_dump(merged(tmp_path, dry_run=False, broker={"mode": "gateway"}, live=LIVE))
    )
    s = load_settings(f, environ={"OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT})
    assert s.dry_run is False and s.live.enabled


def test_the_opt_in_can_come_from_the_environment(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(merged(tmp_path, broker={"mode": "gateway"})))
    s = load_settings(
        f,
        environ={
            "OPTIONSBOT_DRY_RUN": "false",
            "OPTIONSBOT_LIVE__ENABLED": "true",
            "OPTIONSBOT_LIVE__CONFIRM": LIVE_CONFIRMATION,
            "OPTIONSBOT_BROKER__ACCOUNT": ACCOUNT,
        },
    )
    assert s.dry_run is False


def test_the_embedded_simulator_needs_no_opt_in(tmp_path):
    # Not real money: the service starts the simulator itself on a loopback port.
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(merged(tmp_path, dry_run=False)))
    assert load_settings(f, environ={}).dry_run is False


# -- every numeric field is bounded ------------------------------------------------------------


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, (*prefix, name))
        else:
            yield (*prefix, name), field


LEAVES = list(_leaves(Settings))


def _kind(field) -> str:
    ann = field.annotation
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is bool:
        return "bool"
    if ann is int:
        return "int"
    if ann is float:
        return "float"
    if ann is str:
        return "str"
    if ann is SecretStr:
        return "secret"
    if origin is typing.Literal:
        return "literal"
    if origin is dict:
        return "timeouts"
    if origin is tuple and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "models"  # broker.routines: an empty tuple is valid (no routines)
    if origin is tuple:
        return "symbols"
    if Path in args or ann is Path:
        return "path"
    return "datetime"


@pytest.mark.parametrize(
    ("loc", "field"),
    [(loc, f) for loc, f in LEAVES if _kind(f) in ("int", "float")],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else "",
)
def test_every_numeric_setting_has_both_bounds(loc, field):
    bounds = {type(m).__name__ for m in field.metadata}
    assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, f"{'.'.join(loc)} is unbounded"


# -- hypothesis: documents over the whole model ------------------------------------------------

TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).filter(
    lambda t: t.strip() not in {"y", "n", "yes", "no", "on", "off", "true", "false", "t", "f"}
)
HUGE = st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e300, 10**30, -(10**30)])
CONTAINERS = st.sampled_from([[1], {"a": 1}, []])


def bad_value(kind: str, field) -> st.SearchStrategy:
    if kind in ("int", "float"):
        frac = [0.5] if kind == "int" else []
        return st.one_of(HUGE, TEXT, CONTAINERS, st.sampled_from(frac or [math.nan]))
    if kind == "bool":
        return st.one_of(TEXT, st.integers(2, 10**6), CONTAINERS)
    if kind in ("str", "secret", "path"):
        return st.one_of(st.integers(), CONTAINERS, st.floats(allow_nan=False))
    if kind == "literal":
        options = set(typing.get_args(field.annotation))
        return st.one_of(TEXT.filter(lambda t: t not in options), CONTAINERS)
    if kind == "timeouts":
        key = st.sampled_from(typing.get_args(typing.get_args(field.annotation)[0]))
        return st.one_of(
            st.dictionaries(key, st.one_of(HUGE, st.sampled_from([0, -1, "soon"])), min_size=1),
            st.just({"bogus": 1.0}),
        )
    if kind == "symbols":
        return st.one_of(
            st.lists(st.sampled_from([".", "1A", "", "SP Y", "A..B", "TOOLONGSYM", 7]), min_size=1),
            st.just([]),
            st.just("SPY"),
        )
    if kind == "models":
        window = {"name": "reset", "start": "00:15", "minutes": 90}
        return st.sampled_from(
            [
                ["reset"],
                "reset",
                [{"name": "reset"}],
                [{**window, "start": "24:00"}],
                [{**window, "minutes": 0}],
                [{**window, "minutes": 10**30}],
                [{**window, "tz": "Nowhere/City"}],
                [{**window, "days": ["someday"]}],
                [{**window, "name": "Reset Now"}],
                [window, window],  # one name twice
            ]
        )
    return st.one_of(TEXT, CONTAINERS)  # datetimes (an integer is a valid Unix time)


@st.composite
def bad_documents(draw):
    """(yaml text or bytes, what the error must name)."""
    how = draw(st.sampled_from(["value", "value", "value", "unknown", "duplicate", "key", "bytes"]))
    if how == "bytes":
        data = draw(st.binary(min_size=1, max_size=64))
        junk = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3\x28", b"\xe9"]))
        return data[: len(data) // 2] + junk + data[len(data) // 2 :], ("binary", "UTF-8")
    loc, field = draw(st.sampled_from(LEAVES))
    if how == "value":
        value = draw(bad_value(_kind(field), field))
        return {"at": loc, "value": value}, (".".join(loc),)
    if how == "unknown":
        name = draw(st.from_regex(r"[a-z][a-z_]{2,10}", fullmatch=True))
        where = loc[:-1]
        if name in (
            Settings.model_fields
            if not where
            else Settings.model_fields[where[0]].annotation.model_fields
        ):
            name += "_x"
        return {"at": (*where, name), "value": 1}, (".".join((*where, name)),)
    if how == "duplicate":
        return {"duplicate": loc}, (repr(loc[-1]),)
    key = draw(st.sampled_from(["1", "on", "off", "null", "yes", "2.5"]))
    return {"key": (*loc[:-1], key)}, ("is not a setting's name",)


def render(tmp: Path, spec: Any) -> bytes:
    if isinstance(spec, bytes):
        return spec
    doc = base(tmp)
    if "at" in spec:
        node = doc
        *parents, leaf = spec["at"]
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = spec["value"]
        return yaml.safe_dump(doc).encode()
    if "duplicate" in spec:
        *parents, leaf = spec["duplicate"]
        text = yaml.safe_dump({k: v for k, v in doc.items() if not parents or k != parents[0]})
        if parents:
            inner = {**doc.get(parents[0], {})}
            inner.pop(leaf, None)
            body = "".join(
                f"  {k}: {yaml.safe_dump(v).splitlines()[0]}\n" for k, v in inner.items()
            )
            text += f"{parents[0]}:\n{body}  {leaf}: 1\n  {leaf}: 2\n"
        else:
            text += f"{leaf}: 1\n{leaf}: 2\n"
        return text.encode()
    *parents, key = spec["key"]
    text = yaml.safe_dump({k: v for k, v in doc.items() if not parents or k != parents[0]})
    inner = "".join(
        f"  {k}: {yaml.safe_dump(v).splitlines()[0]}\n"
        for k, v in (doc.get(parents[0], {}) if parents else {}).items()
    )
    text += f"{parents[0]}:\n{inner}  {key}: 1\n" if parents else f"{key}: 1\n"
    return text.encode()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(bad_documents())
def test_any_bad_document_is_refused_naming_the_field(monkeypatch_socket, case):
    spec, names = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = tmp / "c.yaml"
        f.write_bytes(render(tmp, spec))
        before = sorted(tmp.rglob("*"))
        try:
            load_settings(f, environ={})
        except ConfigError as exc:
            text = exc.render()
        else:
            raise AssertionError(f"accepted: {f.read_bytes()[:400]!r}")
        assert any(n in text for n in names), (names, text)
        assert "Traceback" not in text
        assert sorted(tmp.rglob("*")) == before, "validation created a file"
    assert monkeypatch_socket == [], "validation opened a socket"


@pytest.fixture
def monkeypatch_socket(monkeypatch):
    opened: list[Any] = []

    def refuse(self, *args, **kwargs):
        opened.append(args)
        raise OSError("no sockets while validating")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)
    return opened


@settings(max_examples=100, deadline=None)
@given(account=st.from_regex(r"(U|DU|F|DF)[0-9]{5,9}", fullmatch=True), where=st.integers(0, 3))
def test_the_account_never_appears_in_an_error(account, where):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        doc = merged(tmp, dry_run=False, broker={"mode": "gateway"})
        environ = {"OPTIONSBOT_BROKER__ACCOUNT": account}
        if where == 1:
            doc["broker"]["account"] = int(account.lstrip("UDF"))
            environ = {}
        elif where == 2:
            environ = {"OPTIONSBOT_BROKER__ACCOUNT": account + " "}
        elif where == 3:
            environ = {"OPTIONSBOT_BROKERACCOUNT": account}
        f = tmp / "c.yaml"
        f.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError) as err:
            load_settings(f, environ=environ)
        digits = account.lstrip("UDF")
        problems = "\n".join(err.value.problems)
        assert digits not in problems, problems


@pytest.mark.parametrize(
    "data",
    [b"\x01\xe9\x80\x80", b"a: 1\n\x7fb: 2\n", b"risk:\n  x: \x1b[31m\n"],
)
def test_control_characters_in_valid_utf8_are_named_as_binary(tmp_path, data):
    """Found by the generator in CI: UTF-8-valid bytes with a control character got PyYAML's
    'unacceptable character #x0001' with no hint it is the wrong file."""
    f = tmp_path / "c.yaml"
    f.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    text = info.value.render()
    assert "binary" in text and "control character U+" in text and "line " in text
