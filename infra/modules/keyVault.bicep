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

@description('Accept traffic from public networks (Entra ID + RBAC only). False: private endpoint only.')
param publicNetworkAccess bool = true

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: public network access is a parameter (main.bicep privateNetworking: a private endpoint, default action Deny); access is Entra ID + RBAC only either way.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109.
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
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess ? 'Allow' : 'Deny'
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
