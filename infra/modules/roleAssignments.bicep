// Every role assignment of one region, in one place. Names are guid(scope, principal, role) so a
// redeploy is idempotent; tests/infra checks each role GUID against the allow-list and this comment.

@description('Principal (object) ID of the function app\'s user-assigned identity.')
param principalId string

@description('Name of the app\'s data storage account (DicomStorage connection).')
param dataStorageAccountName string

@description('Name of the function app\'s host storage account (AzureWebJobsStorage, deployment package).')
param hostStorageAccountName string

@description('Name of the region\'s custom Event Grid topic (the app publishes Dicom.* events).')
param customTopicName string

@description('Name of the Application Insights component (Entra ID telemetry ingestion).')
param applicationInsightsName string

@description('Name of the Key Vault holding routing destination credentials.')
param keyVaultName string

@description('Principal ID of Event Grid\'s own identity: it may write the dead-letter container, nothing else.')
param eventGridPrincipalId string

@description('The dead-letter container of the data account.')
param deadLetterContainer string

@description('Optional: a user or group object ID (the deployer) that may upload to and read the data account (main.bicep grantDeployerDataAccess).')
param userPrincipalId string = ''

@description('Optional: principal ID of the DIMSE gateway\'s identity (empty: no gateway in this region).')
param gatewayPrincipalId string = ''

// The allow-list. Nothing else may be assigned.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6' // Storage Table Data Reader
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataStorageAccountName
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource customTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: customTopicName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource dataBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: dataAccount
  name: 'default'
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobService
  name: deadLetterContainer
}

// Data account: blobs (archive, metadata, quarantine, inbox, dead letters), the settle queue, the index tables.
// Read, write and delete blobs: Contributor (Owner would add ACL management, which nothing here needs).
resource dataBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, principalId, roles.storageBlobDataContributor)
  scope: dataAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// Event Grid (system and custom topic) dead-letters with its own identity, into one container only.
resource eventGridDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, eventGridPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource dataQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, principalId, roles.storageQueueDataContributor)
  scope: dataAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource dataTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, principalId, roles.storageTableDataContributor)
  scope: dataAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

// Host account: the Functions host's leases, timers and queues, and the Flex deployment package.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, principalId, roles.storageBlobDataOwner)
  scope: hostAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, principalId, roles.storageQueueDataContributor)
  scope: hostAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource hostTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, principalId, roles.storageTableDataContributor)
  scope: hostAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(customTopic.id, principalId, roles.eventGridDataSender)
  scope: customTopic
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(dataAccount.id, userPrincipalId, roles.storageBlobDataContributor)
  scope: dataAccount
  properties: {
    principalId: userPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// The DIMSE gateway: writes the inbox and reads the archive and its config (blobs), reads the index (tables),
// reads its TLS certificate (Key Vault). No queue, no event topic, no delete on tables.
resource gatewayBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(gatewayPrincipalId)) {
  name: guid(dataAccount.id, gatewayPrincipalId, roles.storageBlobDataContributor)
  scope: dataAccount
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource gatewayTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(gatewayPrincipalId)) {
  name: guid(dataAccount.id, gatewayPrincipalId, roles.storageTableDataReader)
  scope: dataAccount
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
  }
}

resource gatewaySecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(gatewayPrincipalId)) {
  name: guid(vault.id, gatewayPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}
