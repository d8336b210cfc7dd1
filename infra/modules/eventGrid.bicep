// Event Grid per region: a system topic on the data storage account (BlobCreated -> the ingest blob
// trigger) and dicomflow's custom topic (Dicom.* CloudEvents 1.0, Entra ID publishing only).
// Subscriptions need the code deployed first: they live in stage 2 (infra/stage2/main.bicep).

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

@description('Resource ID of Event Grid\'s own user-assigned identity (it only dead-letters undeliverable events).')
param identityId string

@description('Accept events from public networks (publishers sign in with Entra ID). False: private endpoint only.')
param publicNetworkAccess bool = true

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
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
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
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
output customTopicName string = customTopic.name
output customTopicId string = customTopic.id
output customTopicEndpoint string = customTopic.properties.endpoint
