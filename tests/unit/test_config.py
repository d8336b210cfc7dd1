import pytest

from shared.config import Settings, SettingsError


def test_identity_connection_is_read_from_double_underscore_settings() -> None:
    s = Settings.from_env({
        "DicomStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        "DicomStorage__clientId": "cid",
        "DicomEvents__topicEndpointUri": "https://topic.westeurope-1.eventgrid.azure.net/api/events",
    })
    assert s.storage.connection_string is None
    assert s.require_storage().blob_service_uri == "https://acct.blob.core.windows.net"
    assert s.storage.client_id == "cid"
    assert s.events_endpoint.endswith("/api/events")
    assert s.stable_age_seconds == 60.0


def test_missing_storage_names_both_ways_to_configure_it() -> None:
    with pytest.raises(SettingsError, match="DicomStorage__blobServiceUri"):
        Settings.from_env({}).require_storage()


def test_bad_number_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="DICOMFLOW_STABLE_AGE_SECONDS"):
        Settings.from_env({"DICOMFLOW_STABLE_AGE_SECONDS": "soon"})


def test_an_unresolved_key_vault_reference_is_refused_by_name_not_used_as_a_value() -> None:
    ref = "@Microsoft.KeyVault(VaultName=kv-x;SecretName=functionkeys)"
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"DicomStorage": "UseDevelopmentStorage=true", "DICOMFLOW_AUTH_FUNCTION_KEYS": ref,
                           "DICOMFLOW_AUDIT_PATIENT_SALT": ref})
    message = str(err.value)
    assert "DICOMFLOW_AUDIT_PATIENT_SALT, DICOMFLOW_AUTH_FUNCTION_KEYS" in message and "kv-x" not in message
    # A resolved value (what App Service passes when the vault answered) is taken as it is.
    got = Settings.from_env({"DicomStorage": "UseDevelopmentStorage=true",
                             "DICOMFLOW_AUDIT_PATIENT_SALT": "s3cr3t-salt"})
    assert got.audit.patient_salt == "s3cr3t-salt"


def _transport(client: object) -> object:
    pipeline = getattr(getattr(getattr(client, "_client", None), "_client", None), "_pipeline", None)
    transport = (pipeline or getattr(client, "_pipeline"))._transport  # noqa: B009 (the SDK's private pipeline)
    while hasattr(transport, "_transport"):
        transport = transport._transport
    return transport


def test_storage_clients_read_the_environment_per_request_only_where_a_proxy_is_set() -> None:
    """Without a proxy the transport skips requests' per-request scan of the environment (a CA bundle named
    there is given once instead); with one it keeps it, so NO_PROXY and the proxy apply per URL."""
    from shared.services import Services

    base = {"DicomStorage": "UseDevelopmentStorage=true", "REQUESTS_CA_BUNDLE": "/etc/ssl/site-ca.pem"}
    for env, per_request, verify in ((base, False, "/etc/ssl/site-ca.pem"),
                                     ({**base, "HTTPS_PROXY": "http://proxy.example:3128"}, True, True)):
        svc = Services.from_settings(Settings.from_env(env))
        for client in (svc.blobs.service, svc.queues.service, svc.tables.service):  # type: ignore[attr-defined]
            transport = _transport(client)
            assert transport._use_env_settings is per_request  # type: ignore[attr-defined]
            assert transport.connection_config.verify == verify  # type: ignore[attr-defined]
