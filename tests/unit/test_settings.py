import pytest

from app.settings import SettingsError, load_settings


def test_all_settings_from_the_environment(settings_env: dict[str, str]) -> None:
    s = load_settings()
    assert s.quickbooks_realm_id == settings_env["QUICKBOOKS_REALM_ID"]
    assert s.magento_webhook_secret.get_secret_value() == "test-webhook-secret"
    assert s.max_body_bytes == 1024 * 1024
    assert s.qbo_api_base == "https://sandbox-quickbooks.api.intuit.com"


def test_api_base_url_points_at_the_local_sandbox(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUICKBOOKS_API_BASE_URL", "http://127.0.0.1:8090/")
    assert load_settings().qbo_api_base == "http://127.0.0.1:8090"


def test_missing_required_setting_names_the_variable(settings_env: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUICKBOOKS_REALM_ID")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == "missing required setting QUICKBOOKS_REALM_ID (set it in the environment or .env)"


def test_bad_value_names_the_variable_and_never_echoes_secrets(settings_env: dict[str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGQB_MAX_BODY_BYTES", "lots")
    monkeypatch.setenv("QUICKBOOKS_CLIENT_SECRET", "  ")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "invalid setting MAGQB_MAX_BODY_BYTES" in message
    assert "invalid setting QUICKBOOKS_CLIENT_SECRET: Value error, must not be empty" in message
    assert "test-webhook-secret" not in message


def test_secrets_do_not_appear_in_repr(settings_env: dict[str, str]) -> None:
    text = repr(load_settings())
    for secret in ("test-webhook-secret", "test-client-secret", "test-initial-refresh-token"):
        assert secret not in text


def test_kafka_broker_url_for_faust(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:9092, b:9093")
    assert load_settings().kafka_broker_url == "kafka://a:9092;kafka://b:9093"
