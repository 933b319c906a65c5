from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The gateway knows no dashboard (docs/architecture.md): the ledger's drain calls
        # the roll-ups through the hooks connected here, in the same transaction as before.
        # Budgets' reconciliation and digests read the roll-ups through the reader
        # registered here (budgets/spend.py), not the raw ledger rows.
        from budgets import spend
        from gateway import ledger
        from reports import rollups
        from reports import spend as rolled_spend

        ledger.on_records(rollups.apply)
        ledger.on_circuit_events(rollups.record_circuit_events)
        spend.register(rolled_spend.from_rollups)
