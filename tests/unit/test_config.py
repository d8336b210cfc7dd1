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
