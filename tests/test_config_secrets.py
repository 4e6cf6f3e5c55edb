"""Secrets from files (`${file:…}`), what a reload may not change, and how a reload
describes what it did."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.diff import changes, fixed_changes, summary
from proxy.config.reader import MAX_SECRET_FILE, Problems, interpolate
from proxy.server.configure import ConfigError, load_config, parse_config

BASE = """
providers:
  p: {type: openai, api_key: "%s"}
models: {m: {targets: [{provider: p, model: gpt-4o}]}}
"""


def test_a_secret_file_is_read_trimmed_relative_to_the_config(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "openai").write_text("  sk-from-a-file-0123456789\n")
    path = tmp_path / "gatewise.yaml"
    path.write_text(BASE % "${file:secrets/openai}")
    config = load_config(path)
    assert config.providers["p"].api_key == "sk-from-a-file-0123456789"
    assert "sk-from-a-file-0123456789" in config.secrets()
    assert config.files == (str(path), str(tmp_path / "secrets" / "openai"))


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read secret file {f}: No such file or directory"),
    ("", "secret file {f} is empty"),
    (b"\xff\xfe", "secret file {f} is not UTF-8 text"),
    ("x" * (MAX_SECRET_FILE + 1), f"secret file {{f}} is larger than {MAX_SECRET_FILE} bytes"),
])
def test_a_secret_file_that_cannot_be_used_is_a_problem_of_its_field(tmp_path, content,
                                                                    problem):
    secret = tmp_path / "secret"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError) as err:
        parse_config(BASE % f"${{file:{secret}}}", {})
    assert err.value.problems == [f"providers.p.api_key: {problem.format(f=secret)}"]


def test_a_directory_is_no_secret_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE % f"${{file:{tmp_path}}}", {})
    assert err.value.problems == [f"providers.p.api_key: secret file {tmp_path} is not a "
                                  "regular file"]


@settings(max_examples=60, deadline=None)
@given(secret=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)
       .filter(lambda t: t.strip()))
def test_what_a_file_holds_is_used_verbatim_never_read_again(tmp_path_factory, secret):
    """A secret that looks like a reference (`${HOME}`, `${file:/etc/passwd}`) is data."""
    folder = tmp_path_factory.mktemp("s")
    (folder / "s").write_text(secret, encoding="utf-8")
    problems = Problems()
    node = {"a": "${file:s}", "b": ["pre-${file:s}-post"]}
    out = interpolate(node, {"HOME": "/root", "X": "y"}, problems, base=Path(folder))
    assert not problems
    assert out == {"a": secret.strip(), "b": [f"pre-{secret.strip()}-post"]}


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60).filter(lambda t: "${" not in t))
def test_text_without_references_is_left_alone(text):
    assert interpolate({"k": [text]}, {}, Problems()) == {"k": [text]}


def test_fields_only_a_restart_can_change_are_named_never_valued():
    text = BASE % "sk-0000000000000" + 'state: {ledger: "sqlite:/a.db"}\n'
    old = parse_config(text, {})
    new = parse_config(text.replace("/a.db", "/b.db") + "server: {port: 4001}\n"
                       "telemetry: {log_level: debug}\n", {})
    assert fixed_changes(old, new) == [
        "server.port: cannot change while gatewise runs; restart gatewise to apply it",
        "state.ledger: cannot change while gatewise runs; restart gatewise to apply it",
        "telemetry.log_level: cannot change while gatewise runs; restart gatewise to apply it",
    ]
    assert fixed_changes(old, old) == []


def test_changes_name_models_targets_providers_keys_and_sections():
    old = parse_config("""
providers: {a: {type: mock}, b: {type: mock}}
models:
  keep: {targets: [{provider: a, model: x}]}
  gone: {targets: [{provider: b, model: y}]}
keys: [{name: alice, key: alice-key-0123456789}, {name: bob, key: bob-key-0123456789ab}]
""", {})
    new = parse_config("""
providers: {a: {type: mock, latency_ms: 5}, c: {type: mock}}
models:
  keep: {targets: [{provider: a, model: x}]}
  new: {targets: [{provider: c, model: z}]}
keys:
  - {name: alice, key: alice-key-0123456789, metadata: {team: x}}
  - {name: carol, key: carol-key-0123456789}
policies: {retry: {attempts: 5}}
""", {})
    found = changes(old, new)
    assert found == {
        "models": {"added": ["new"], "removed": ["gone"]},
        "targets": {"added": ["c/z"], "removed": ["b/y"]},
        "providers": {"added": ["c"], "removed": ["b"], "changed": ["a"]},
        "keys": {"added": ["carol"], "removed": ["bob"], "changed": ["alice"]},
        "sections": ["routing"],
    }
    assert summary(found) == ("models +new -gone; targets +c/z -b/y; providers +c -b ~a; "
                              "keys +carol -bob ~alice; changed: routing")
    assert changes(old, old) == {} and summary({}) == "no changes"


def test_a_fifo_or_a_device_is_no_secret_file(tmp_path):
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name in (fifo, "/dev/zero"):
        with pytest.raises(ConfigError) as err:
            parse_config(BASE % f"${{file:{name}}}", {})  # returns at once, never blocks
        assert err.value.problems == [f"providers.p.api_key: secret file {name} is not a "
                                      "regular file"]
