// Key Vault: the DIMSE gateway's TLS certificate, the optional Functions keys for machine clients
// (functionKeysSecretName), and destination credentials routing needs (e.g. a partner PACS's STOW-RS secret).
// RBAC mode only (no access policies), soft delete + purge protection, public access or a private endpoint.

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

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
