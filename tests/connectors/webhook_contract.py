"""The contract kit for connectors that only receive webhooks (RD Station,
Typeform): nothing to pull, so the kit's reading, paging, retry and
credential-check tests do not apply and are skipped by name; what a webhook
connector owes instead is checked here, on recorded deliveries."""
from __future__ import annotations

import logging
import traceback

import pytest

from cdp.connectors import WebhookError
from cdp.testing import ConnectorContract
from cdp.testing.contract import make_test_runtime

PULL_ONLY = ("test_check_fails_clearly_with_bad_credentials", "test_records_conform_to_the_common_model",
             "test_reading_again_from_the_last_cursor_yields_nothing_new",
             "test_resuming_from_a_batch_cursor_skips_nothing", "test_ingesting_twice_stores_duplicates_only",
             "test_429_with_retry_after_is_retried", "test_5xx_is_retried_then_reported_unavailable",
             "test_malformed_page_is_a_clear_connector_error", "test_no_secret_in_logs_or_error_text")


def _skip_pull_only(self, *args, **kwargs):
    pytest.skip("webhook-only connector: nothing is pulled from an API")


class WebhookContract(ConnectorContract):
    """Also implement `deliveries(signed)`: recorded deliveries as (body, headers), correctly signed or not."""

    signs_body = True  # an HMAC of the body (a changed body is refused); False for a shared token

    def serve(self, server):
        pass  # nothing to serve: the source calls us

    def bad_credentials_config(self, base_url):
        return self.config(base_url)

    def deliveries(self, signed: bool = True) -> list[tuple[bytes, dict]]:
        raise NotImplementedError

    def webhook_delivery(self, base_url, signed=True):
        return self.deliveries(signed)[0]

    def test_streams_are_empty_and_read_yields_nothing(self, contract_server):
        connector = self.make(contract_server.url)
        assert connector.streams() == [] and list(connector.read("", None, 100)) == []

    def test_every_delivery_maps_to_valid_records(self, contract_server):
        from schemas.record import load_record

        connector = self.make(contract_server.url)
        for body, headers in self.deliveries():
            records = connector.handle_webhook(body, headers)
            assert records
            for record in records:
                load_record(record, connector.source)

    def test_duplicate_deliveries_are_stored_once(self, contract_server, tmp_path):
        from cdp.ingest import ingest_batch

        runtime = make_test_runtime(tmp_path / "instance")
        connector = self.make(contract_server.url)
        first = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for body, headers in self.deliveries():
            counts = ingest_batch(runtime, connector.source, connector.handle_webhook(body, headers),
                                  plugin=connector.name).counts()
            first = {k: first[k] + counts[k] for k in first}
        assert first["rejected"] == 0 and first["accepted"] > 0
        for body, headers in self.deliveries():  # the sender retries every delivery
            counts = ingest_batch(runtime, connector.source, connector.handle_webhook(body, headers),
                                  plugin=connector.name).counts()
            assert counts["accepted"] == counts["updated"] == counts["rejected"] == 0 and counts["duplicate"] > 0

    def test_unsigned_tampered_and_unreadable_deliveries_are_refused(self, contract_server, caplog):
        caplog.set_level(logging.DEBUG)
        connector = self.make(contract_server.url)
        texts = []
        body, headers = self.deliveries()[0]
        attempts = [(body, {}), *self.deliveries(signed=False)]
        if self.signs_body:
            attempts.append((body.replace(b"}", b" }", 1), headers))
        for bad_body, bad_headers in attempts:
            with pytest.raises(WebhookError) as info:
                connector.handle_webhook(bad_body, bad_headers)
            assert info.value.status in (401, 403) and self.connector_class.name in info.value.message
            texts.append("".join(traceback.format_exception(info.value)))
        for secret in self._secrets(contract_server.url):
            assert secret not in caplog.text and all(secret not in t for t in texts)


for _name in PULL_ONLY:
    setattr(WebhookContract, _name, _skip_pull_only)
