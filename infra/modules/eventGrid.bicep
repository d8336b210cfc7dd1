// Event Grid per region: a system topic on the data storage account (BlobCreated -> the ingest blob
// trigger) and dicomflow's custom topic (Dicom.* CloudEvents 1.0, Entra ID publishing only).
// Subscriptions need the code deployed first: they live in stage 2 (infra/stage2/main.bicep).
// Each topic has its own system-assigned identity, which dead-letters undeliverable events and nothing else: the
// storage firewall admits trusted services only with a system-assigned identity.

@description('Azure region (the system topic must be in the storage account\'s region).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource ID of the data storage account the system topic listens to.')
param storageAccountId string

@description('System topic name.')
param systemTopicName string

@description('Custom topic name.')
param customTopicName string

@description('Accept events from public networks (publishers sign in with Entra ID). False: private endpoint only.')
param publicNetworkAccess bool = true

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource customTopic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: public network access is a parameter (main.bicep privateNetworking); publishing needs an Entra ID token either way (local auth disabled).
  name: customTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
  }
}

resource systemTopicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: systemTopic
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource customTopicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: customTopic
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output systemTopicName string = systemTopic.name
output systemTopicId string = systemTopic.id
output systemTopicPrincipalId string = systemTopic.identity.principalId
output customTopicPrincipalId string = customTopic.identity.principalId
output customTopicName string = customTopic.name
output customTopicId string = customTopic.id
output customTopicEndpoint string = customTopic.properties.endpoint
