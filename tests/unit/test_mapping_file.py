"""The mapping file: documented defaults, every section read, a bad file named key by key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.mapping import MappingConfig, PaymentRule
from app.mapping_file import MappingFileError, load_mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "mapping.example.toml"


def test_the_documented_example_is_exactly_the_defaults() -> None:
    assert load_mapping(EXAMPLE) == load_mapping(None) == MappingConfig()


def test_every_section_is_read(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text("""
doc_number_prefix = "WEB"
store_timezone = "Europe/Warsaw"
home_currency = "PLN"
[accounts]
deposit = "35"
[items]
type = "Service"
adjustment = "Zaokrąglenie"
[customers]
guests = "single"
[totals]
adjustment_tolerance = "0.02"
[tax]
mode = "global"
prices = "TaxInclusive"
[tax.codes]
"23.0000" = "5"
"8" = "6"
[payment.methods.banktransfer]
document = "Invoice"
terms = "3"
due_days = 14
""")
    cfg = load_mapping(f)
    assert (cfg.doc_number_prefix, cfg.store_timezone, cfg.home_currency) == ("WEB", "Europe/Warsaw", "PLN")
    assert (cfg.deposit_account_id, cfg.item_type, cfg.adjustment_item_name) == ("35", "Service", "Zaokrąglenie")
    assert (cfg.guest_policy, cfg.adjustment_tolerance) == ("single", Decimal("0.02"))
    assert (cfg.tax_mode, cfg.tax_prices, dict(cfg.tax_codes)) == ("global", "TaxInclusive", {"23": "5", "8": "6"})
    # Naming a method keeps the built-in purchaseorder → Invoice rule.
    assert cfg.payment_rules == {"purchaseorder": PaymentRule(document="Invoice"),
                                 "banktransfer": PaymentRule(document="Invoice", terms_id="3", due_days=14)}


@pytest.mark.parametrize(("text", "message"), [
    ('[items]\ntipe = "x"', "items.tipe: unknown key"),
    ('store_timezone = "Mars/Olympus"', "store_timezone: Value error, unknown time zone 'Mars/Olympus'"),
    ('[tax.codes]\n"abc" = "5"', "tax.codes: Value error, key 'abc' is not a Magento tax rate in percent"),
    ('[totals]\nadjustment_tolerance = "5"', "totals.adjustment_tolerance: Input should be less than or equal to 1"),
    ('[payment.methods.checkmo]\ndocument = "Bill"', "payment.methods.checkmo.document: Input should be"),
    ('home_currency = "usd"', "home_currency: String should match pattern"),
    ("doc_number_prefix = ", "is not valid TOML"),
    ('refund_number_prefix = "MAG-"', "refund_number_prefix must differ from doc_number_prefix"),
    ('payment_number_prefix = "MAG-PAYMENT-"', "payment_number_prefix: String should have at most 8 characters"),
])
def test_a_bad_file_names_the_key_and_why(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MappingFileError) as err:
        load_mapping(f)
    assert message in str(err.value) and str(f) in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="does not exist"):
        load_mapping(tmp_path / "nope.toml")


def test_the_mapping_command_checks_a_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from app.cli import main

    good = CliRunner().invoke(main, ["mapping", str(EXAMPLE)])
    assert good.exit_code == 0 and "OK" in good.output and "adjustment_tolerance = 0.05" in good.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[customers]\nguests = "everyone"\n')
    result = CliRunner().invoke(main, ["mapping", str(bad)])
    assert result.exit_code != 0
    assert "customers.guests: Input should be 'per_email' or 'single'" in result.output


def test_a_worker_with_a_bad_mapping_file_stops_on_start_naming_the_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import TEST_ENV

    bad = tmp_path / "bad.toml"
    bad.write_text('[tax]\nmode = "vat"\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
           **TEST_ENV, "MAGQB_MAPPING_FILE": str(bad), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--web-port", "0"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"mapping file {bad}: tax.mode: Input should be 'us' or 'global'" in done.stderr


def test_refund_and_payment_keys_are_read(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('refund_number_prefix = "RF-"\npayment_number_prefix = "PY-"\n[items]\nrefund_fee = "Restocking"\n'
                 '[payment.methods.checkmo]\nrefund_account = "35"\n')
    cfg = load_mapping(f)
    assert (cfg.refund_number_prefix, cfg.payment_number_prefix, cfg.refund_fee_item_name) == ("RF-", "PY-",
                                                                                                 "Restocking")
    assert cfg.payment_rules["checkmo"].refund_account_id == "35"
