"""Prometheus metrics, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

INBOUND = Counter("kengele_inbound_messages_total", "Inbound SMS received", ["provider", "result"])
WEBHOOK_REJECTED = Counter(
    "kengele_webhook_rejected_total", "Webhook requests refused", ["provider", "reason"]
)
INTAKE_BATCH = Histogram(
    "kengele_intake_batch_size",
    "Messages committed per intake transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PROCESSED = Counter("kengele_processed_messages_total", "Inbound messages processed", ["outcome"])
OUTBOUND = Counter("kengele_outbound_attempts_total", "Outbound send attempts", ["gateway", "result"])
DELIVERY = Counter("kengele_delivery_reports_total", "Delivery receipts", ["provider", "status"])
OUTBOX_DEPTH = Gauge("kengele_outbox_claimed", "Outbound messages claimed by the last dispatcher pass")
# Messages not sent to keep costs bounded (app/services/limits.py; the outbox's daily budget,
# reason "budget"): by reason, never by number.
SUPPRESSED = Counter("kengele_suppressed_total", "Outbound SMS not sent by cost control", ["reason"])
SEND_DEFERRED = Counter(
    "kengele_send_deferred_total",
    "Outbound SMS put back in the queue to keep a gateway's pace (rate) or its Retry-After (paused)",
    ["gateway", "reason"],
)
# Outbound webhook attempts by outcome: delivered (2xx), http_error (any other answer), timeout,
# unreachable (connection refused, DNS), refused (the URL resolves to an address never called).
WEBHOOK_DELIVERIES = Counter(
    "kengele_webhook_deliveries_total", "Outbound webhook delivery attempts", ["outcome"]
)
WEBHOOK_PENDING = Gauge("kengele_webhook_claimed", "Webhook deliveries claimed by the last deliverer pass")
