// One storage account: Standard_RAGZRS, identity-only access (no shared keys), versioning (object replication
// needs it on both sides), soft delete, change feed (object replication source), the given containers/queues/tables
// and lifecycle rules; public network access or private endpoints only.
// The app's data account and the function app's host account both use this module.

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
param name string

@description('Azure region of the account.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Blob containers to create (no public access).')
param containers array

@description('Queues to create.')
param queues array = []

@description('Tables to create.')
param tables array = []

@description('Lifecycle management rules (Microsoft.Storage managementPolicies rule objects); empty for none.')
param lifecycleRules array = []

@description('Days that deleted blobs, versions and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Days of change feed kept (object replication needs the change feed on the source account).')
@minValue(1)
@maxValue(146000)
param changeFeedRetentionDays int = 7

@description('Container that gets version-level immutability (WORM); empty for none.')
param immutableContainer string = ''

@description('Days each blob version in the immutable container is kept unchangeable (0 = no time-based policy).')
@minValue(0)
param immutabilityDays int = 0

@description('Container whose blobs can only be appended to, never changed or deleted, for appendOnlyDays (container-level time-based retention with protected append writes: the audit trail); empty for none.')
param appendOnlyContainer string = ''

@description('Days each blob in the append-only container stays unchangeable.')
@minValue(0)
param appendOnlyDays int = 0

@description('Accept traffic from public networks (Entra ID only; shared keys are off). False: private endpoints only.')
param publicNetworkAccess bool = true

@description('Track last access time (lifecycle rules that tier by last access need it).')
param lastAccessTracking bool = false

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: public network access is a parameter (main.bicep privateNetworking: private endpoints, default action Deny); by default modalities and gateways upload over the internet with Entra ID tokens (shared keys are off).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous blob access is always off (allowBlobPublicAccess false).
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_RAGZRS'
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess ? 'Allow' : 'Deny'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    changeFeed: {
      enabled: true
      retentionInDays: changeFeedRetentionDays
    }
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    lastAccessTimeTrackingPolicy: {
      enable: lastAccessTracking
      name: 'AccessTimeTracking'
      trackingGranularityInDays: 1
      blobType: [
        'blockBlob'
      ]
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containers: {
  parent: blobService
  name: container
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: container == immutableContainer
    }
  }
}]

resource immutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!empty(immutableContainer) && immutabilityDays > 0) {
  name: '${account.name}/default/${empty(immutableContainer) ? 'none' : immutableContainer}/default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
    allowProtectedAppendWrites: false
  }
  dependsOn: [
    blobContainers
  ]
}

// Container-level WORM needs no enablement on the account or container (unlike version-level immutability above),
// so it can be added to an existing container. Append blobs get new blocks; nothing can be overwritten or deleted.
resource appendOnly 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!empty(appendOnlyContainer) && appendOnlyDays > 0) {
  name: '${account.name}/default/${empty(appendOnlyContainer) ? 'none' : appendOnlyContainer}/default'
  properties: {
    immutabilityPeriodSinceCreationInDays: appendOnlyDays
    allowProtectedAppendWrites: true
  }
  dependsOn: [
    blobContainers
  ]
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in queues: {
  parent: queueService
  name: queue
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for table in tables: {
  parent: tableService
  name: table
}]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(lifecycleRules)) {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: lifecycleRules
    }
  }
}

resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
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
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
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

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
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

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
