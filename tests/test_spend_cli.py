"""`gatewise spend --config FILE` prints the ledger as a table."""

from __future__ import annotations

import time

from proxy.server.cli import main
from proxy.state.ledger import Outcome, Pending, SqliteLedger


def _outcome(provider: str, cost: float) -> Outcome:
    return Outcome(provider=provider, target=f"{provider}/m", http_status=200, error_class=None,
                   prompt_tokens=100, completion_tokens=20, cached_tokens=0, cost=cost,
                   estimated=False, latency_ms=3.0, cache_hit=False, finished_at=time.time())


async def _fill(db: str) -> None:
    ledger = SqliteLedger(db)
    await ledger.open(time.time())
    now = time.time()
    rows = [("a", "web", "gpt-4o", "openai", 0.25), ("b", "web", "gpt-4o", "openai", 0.5),
            ("c", "batch", "claude", "anthropic", 1.0), ("old", "web", "gpt-4o", "openai", 7.0)]
    for rid, key, model, provider, cost in rows:
        created = now - 40 * 86400 if rid == "old" else now
        await ledger.begin(Pending(rid, rid, key, model, cost, False, created))
        await ledger.finish(rid, _outcome(provider, cost))
    await ledger.close()


def _config(tmp_path, ledger: str | None) -> str:
    path = tmp_path / "gw.yaml"
    state = f'state: {{ledger: "sqlite:{ledger}"}}\n' if ledger else ""
    path.write_text("providers: {offline: {type: mock}}\n"
                    "models: {echo: {targets: [{provider: offline, model: echo}]}}\n" + state)
    return str(path)


async def test_spend_table_by_key_and_model(tmp_path, capsys):
    db = str(tmp_path / "ledger.db")
    await _fill(db)
    assert main(["spend", "--config", _config(tmp_path, db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("spend by key, period: day")
    assert out[1].split() == ["key", "requests", "prompt_tok", "completion_tok", "cached_tok",
                              "cost_usd", "pending_usd"]
    assert out[2].split() == ["batch", "1", "100", "20", "0", "1.000000", "0.000000"]
    assert out[3].split() == ["web", "2", "200", "40", "0", "0.750000", "0.000000"]
    assert out[4].split() == ["TOTAL", "3", "1.750000"]
    assert main(["spend", "--config", _config(tmp_path, db), "--by", "provider",
                 "--period", "total"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:2] == ["openai", "3"] and out[2].split()[5] == "7.750000"


def test_spend_needs_a_ledger(tmp_path, capsys):
    assert main(["spend", "--config", _config(tmp_path, None)]) == 2
    assert "state.ledger is not set" in capsys.readouterr().err
    # a ledger file the server has not created yet (a fresh checkout): nothing spent
    assert main(["spend", "--config", _config(tmp_path, str(tmp_path / "missing.db"))]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].split() == ["TOTAL", "0", "0.000000"]
    assert "nothing has been recorded" in err
    (tmp_path / "junk.db").write_text("not a database")
    assert main(["spend", "--config", _config(tmp_path, str(tmp_path / "junk.db"))]) == 2
    assert "cannot read the ledger" in capsys.readouterr().err
