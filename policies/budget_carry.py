"""A reload's budget policy taking over from the running one.

The new config makes a new `Budget` (its keys, scopes and thresholds), on the
same ledger and the same store, so spend and reservations of requests still in
flight count in one place. What it adds is loaded from the ledger: a key or a
provider given a budget, or a budget whose period changed, starts from what the
ledger says was spent this period, not from zero.
"""

from __future__ import annotations

from policies.budget import Budget, period_label


def scope_names(budget: Budget, now: float) -> set[str]:
    """Every budget scope of the budget's config in the current periods."""
    b = budget.budgets
    names = {f"key:{k.name}:{period_label(k.budget.per, now)}"
             for k in budget.config.keys if k.budget is not None}
    names |= {f"provider:{n}:{period_label(p.per, now)}" for n, p in b.providers.items()}
    if b.global_ is not None:
        names.add(f"global:{period_label(b.global_.per, now)}")
    return names


async def adopt(budget: Budget, previous: Budget | None) -> None:
    """Thresholds already passed stay quiet; scopes new to this config are loaded from
    the ledger (raised to its total, never added to: see the stores' `seed`). With no
    previous budget this one is the first to use the ledger: it opens it."""
    if previous is None:
        await budget.start()
        return
    budget.alerted.update(previous.alerted)
    now = budget.now()
    added = scope_names(budget, now) - scope_names(previous, now)
    if added and budget.ledger is not None:
        totals: dict[str, float] = {}
        budget.rebuild(await budget.ledger.spend_by_day(), now, totals)
        await budget.store.seed({s: v for s, v in totals.items() if s in added})


async def keys_changed(budget: Budget, names: set[str]) -> None:
    """Keys made or changed through the admin API: their budgets are read again, and
    a budget scope one of them now has starts from this period's spend in the ledger."""
    budget.forget_cached()
    now = budget.now()
    scopes = {f"key:{k.name}:{period_label(k.budget.per, now)}" for k in budget.more_keys()
              if k.name in names and k.budget is not None}
    if scopes and budget.ledger is not None:
        totals: dict[str, float] = {}
        budget.rebuild(await budget.ledger.spend_by_day(), now, totals)
        await budget.store.seed({s: totals.get(s, 0.0) for s in scopes})
