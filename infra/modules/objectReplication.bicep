// One side of an object replication policy (blob copies from one region's data account to the other's).
// Deploy the destination side first (policyId 'default', no rule IDs): Azure assigns the policy and rule
// IDs, which the source side then uses verbatim. Priority replication is on (API 2025-08-01): 99% of objects within
// 15 minutes when both accounts are on one continent (docs/deploy.md, "RPO and RTO"), billed per GB replicated; it
// turns on the replication metrics (operations and bytes pending, by time bucket) that the alerts read.

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

@description('Priority replication (and its metrics). Azure allows it on one policy per source account: each direction here has its own source.')
param priorityReplication bool = true

resource account 'Microsoft.Storage/storageAccounts@2025-08-01' existing = {
  name: accountName
}

resource policy 'Microsoft.Storage/storageAccounts/objectReplicationPolicies@2025-08-01' = {
  parent: account
  name: policyId
  properties: {
    sourceAccount: sourceAccountId
    destinationAccount: destinationAccountId
    priorityReplication: {
      enabled: priorityReplication
    }
    // Pending operations and bytes by time bucket (priority replication turns them on too; stated, not implied).
    metrics: {
      enabled: true
    }
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
