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

@description('Principal ID of the storage system topic\'s system-assigned identity: it may write the dead-letter container, nothing else.')
param systemTopicPrincipalId string

@description('Principal ID of the custom topic\'s system-assigned identity: it may write the dead-letter container, nothing else.')
param customTopicPrincipalId string

@description('The dead-letter container of the data account.')
param deadLetterContainer string

@description('Optional: a user or group object ID (the deployer) that may upload to and read the data account (main.bicep grantDeployerDataAccess).')
param userPrincipalId string = ''

@description('Optional: principal ID of the DIMSE gateway\'s identity (empty: no gateway in this region).')
param gatewayPrincipalId string = ''

@description('Containers the DIMSE gateway writes (the inbox): Storage Blob Data Contributor on each, nothing wider.')
param gatewayWrites array = []

@description('Containers the DIMSE gateway reads (archive and configuration, its region\'s and the peer\'s replica): Storage Blob Data Reader on each.')
param gatewayReads array = []

@description('Queues the DIMSE gateway sends messages to (the batched ingest path): Storage Queue Data Message Sender on each.')
param gatewaySendsTo array = []

@description('The Key Vault secret with the DIMSE gateway\'s TLS certificate; empty: none.')
param gatewaySecretName string = ''

@description('The Key Vault secret with the audit trail\'s patient salt (keyVault.bicep): the DIMSE gateway reads it (DICOMFLOW_AUDIT_PATIENT_SALT), on its own assignment.')
param auditPatientSaltSecretName string

@description('Optional: a user or group object ID (the deployer) that may read the patient salt secret and nothing else of the vault: azd reads it back before each deployment (main.parameters.json). main.bicep passes it in the primary region only.')
param saltReaderPrincipalId string = ''

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
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
}
var gateway = !empty(gatewayPrincipalId)

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

resource gatewayWriteScopes 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for c in gatewayWrites: {
  parent: dataBlobService
  name: c
}]

resource gatewayReadScopes 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for c in gatewayReads: {
  parent: dataBlobService
  name: c
}]

resource gatewayQueueScopes 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for q in gatewaySendsTo: {
  name: '${dataStorageAccountName}/default/${q}'
}]

resource gatewaySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: empty(gatewaySecretName) ? 'none' : gatewaySecretName
}

resource auditSaltSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: auditPatientSaltSecretName
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

// Event Grid (system and custom topic) dead-letters with each topic's system-assigned identity, into one container
// only (the storage firewall admits a trusted service only with a system-assigned identity).
resource systemTopicDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource customTopicDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, customTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    principalId: customTopicPrincipalId
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

// The deployer reads the patient salt (azd's read-back before a deployment), that one secret and nothing else.
resource deployerAuditSalt 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(saltReaderPrincipalId)) {
  name: guid(auditSaltSecret.id, saltReaderPrincipalId, roles.keyVaultSecretsUser)
  scope: auditSaltSecret
  properties: {
    principalId: saltReaderPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// The DIMSE gateway: exactly its containers, its queue and its two secrets. It writes the inbox (C-STORE) and, for
// the batched ingest path, this region's archive and metadata; reads the archive and its configuration
// (C-FIND/C-MOVE/C-GET, destinations.json; this region's copy and the peer's replica), reads the index (tables), its
// TLS certificate and the audit trail's patient salt, sends the batch queue's messages. No other container or queue,
// no event topic, no other secret: each secret is its own assignment, scoped to that secret, never the vault.
resource gatewayBlobWrites 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in (gateway ? gatewayWrites : []): {
  name: guid(gatewayWriteScopes[i].id, gatewayPrincipalId, roles.storageBlobDataContributor)
  scope: gatewayWriteScopes[i]
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}]

resource gatewayBlobReads 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in (gateway ? gatewayReads : []): {
  name: guid(gatewayReadScopes[i].id, gatewayPrincipalId, roles.storageBlobDataReader)
  scope: gatewayReadScopes[i]
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}]

resource gatewayQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in (gateway ? gatewaySendsTo : []): {
  name: guid(gatewayQueueScopes[i].id, gatewayPrincipalId, roles.storageQueueDataMessageSender)
  scope: gatewayQueueScopes[i]
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
  }
}]

resource gatewayTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (gateway) {
  name: guid(dataAccount.id, gatewayPrincipalId, roles.storageTableDataReader)
  scope: dataAccount
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
  }
}

resource gatewaySecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (gateway && !empty(gatewaySecretName)) {
  name: guid(gatewaySecret.id, gatewayPrincipalId, roles.keyVaultSecretsUser)
  scope: gatewaySecret
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource gatewayAuditSalt 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (gateway) {
  name: guid(auditSaltSecret.id, gatewayPrincipalId, roles.keyVaultSecretsUser)
  scope: auditSaltSecret
  properties: {
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}
