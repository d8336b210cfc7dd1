// The peer region's identity may read this region's data account's tables (the follower reads the change feed
// there: shared/ingest/follow.py), nothing else: no blobs, no queues, no writes. Deployed in this region's
// resource group after both regions exist. Names are guid(scope, principal, role), as in roleAssignments.bicep.

@description('Name of this region\'s data storage account.')
param dataStorageAccountName string

@description('Principal (object) ID of the peer region\'s function app identity.')
param peerPrincipalId string

var roles = {
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6' // Storage Table Data Reader
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataStorageAccountName
}

resource peerTableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, peerPrincipalId, roles.storageTableDataReader)
  scope: dataAccount
  properties: {
    principalId: peerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
  }
}
