// Key Vault: the audit trail's patient salt (the one secret the deployment itself writes), the DIMSE gateway's TLS
// certificate, the optional Functions keys for machine clients (functionKeysSecretName), and the TLS material routing
// needs (docs/deploy.md). RBAC mode only (no access policies), soft delete + purge protection, public access or a
// private endpoint.

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
param name string

@description('Days a deleted vault or secret stays recoverable.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Deny the public internet (default action Deny, no address allowed): the private endpoint only. An operator adds their address for a moment to upload a secret (docs/deploy.md). false: any network, Entra ID + RBAC only.')
param privateOnly bool = false

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

@description('Name of the secret that holds the audit trail\'s patient salt (the same name in each region\'s vault).')
param auditPatientSaltSecretName string

@secure()
@minLength(15)
@description('The audit trail\'s patient salt (DICOMFLOW_AUDIT_PATIENT_SALT): the same value in both regions (main.bicep auditPatientSalt).')
param auditPatientSalt string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the firewall's default action is a parameter: Deny with privateNetworking (main.bicep's default); access is Entra ID + RBAC only either way.
  // checkov:skip=CKV_AZURE_189: the public endpoint stays on (denying every address) so an operator can allow their own address for a moment to upload a certificate, which Disabled would forbid.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

// Written on every deployment with the value the deployment was given (azd reads it back from the primary's vault
// first, so the value stays; each deployment adds a version with the same value). The function app reads it through
// a Key Vault reference, the DIMSE gateway as a Container Apps secret: never a value in app settings or Bicep.
resource auditSalt 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: no expiry on purpose: the salt must not be rotated while audit records are kept (6 years by default), since a new salt makes every earlier record's patient digest unfindable; an expiry date would only invite that rotation.
  parent: vault
  name: auditPatientSaltSecretName
  properties: {
    value: auditPatientSalt
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
// The salt secret's name and its URI without a version (readers always get the current version); referring to the
// resource makes every reader wait for it.
output auditPatientSaltSecretName string = auditSalt.name
output auditPatientSaltSecretUri string = auditSalt.properties.secretUri
