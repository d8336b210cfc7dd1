// One side of an object replication policy (blob copies from the primary to the secondary data account).
// Deploy the destination side first (policyId 'default', no rule IDs): Azure assigns the policy and rule
// IDs, which the source side then uses verbatim.

@description('Name of the storage account this side of the policy belongs to.')
param accountName string

@description('Policy ID: \'default\' on the destination side; the destination\'s returned policyId on the source side.')
param policyId string = 'default'

@description('Resource ID of the source (primary) storage account.')
param sourceAccountId string

@description('Resource ID of the destination (secondary) storage account.')
param destinationAccountId string

@description('Containers replicated to the container of the same name.')
param containers array

@description('Rule IDs returned by the destination side, in container order; empty on the destination side.')
param ruleIds array = []

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: accountName
}

resource policy 'Microsoft.Storage/storageAccounts/objectReplicationPolicies@2023-05-01' = {
  parent: account
  name: policyId
  properties: {
    sourceAccount: sourceAccountId
    destinationAccount: destinationAccountId
    rules: [for (container, i) in containers: {
      ruleId: empty(ruleIds) ? null : ruleIds[i]
      sourceContainer: container
      destinationContainer: container
      filters: {
        minCreationTime: '1601-01-01T00:00:00Z'
      }
    }]
  }
}

output policyId string = policy.properties.policyId
output ruleIds array = [for (container, i) in containers: policy.properties.rules[i].ruleId]
