// One place to look (global resource group): an action group and the alert rules over both regions. Metric alerts
// read platform metrics (no patient data in them); log alerts read FunctionAppLogs and StorageQueueLogs in each
// region's own workspace (the diagnostic settings, which are not sampled as Application Insights traces are).
// The log lines they match are the app's: tests/infra/test_alerts.py checks each against the code.
//
// | alert                         | signal                                                              | severity |
// | Front Door origin health      | OriginHealthPercentage < 90 % over 5 min, per origin                | 1        |
// | replication pending > 15 min  | PendingOperationsForReplication in a time bucket past 15 min > 0    | 1        |
// | follower lag > 5 min          | log line "follower lag_seconds=<n>" with n > 300 (scheduled query)  | 2        |
// | dead letters                  | DeadLetteredCount > 0 over 15 min, per topic                        | 2        |
// | poison queue                  | a message put on a *-poison queue over 15 min (StorageQueueLogs)    | 3        |
// | poison given up               | log line "poison-exhausted": a re-drive gave up (nothing-lost)       | 1        |
// | HTTP 5xx rate                 | Percentage5XX > 5 % over 5 min at Front Door                         | 2        |
// | quarantine spike              | "quarantined (" log lines over 15 min > quarantineSpikeThreshold    | 3        |
// | gateway unreachable           | Replicas < 1 over 5 min, per region's DIMSE gateway                 | 1        |

@description('Tags for every resource.')
param tags object = {}

@description('Region of the log alert rules (the global group\'s).')
param location string

@description('Action group name.')
param actionGroupName string

@description('E-mail addresses to notify (common alert schema).')
param emails array = []

@description('Front Door profile ID (origin health, 5xx).')
param frontDoorProfileId string

@description('Resource IDs of the object replication policies on their source accounts (one per direction).')
param replicationPolicyIds array

@description('TimeBucket values of PendingOperationsForReplication that are still within 15 minutes (excluded: anything pending in another bucket fires). If Azure names a bucket differently, the rule fires on every pending operation: loud, never silent; fix the names from the metric\'s TimeBucket split in the portal.')
param replicationOnTimeBuckets array = [
  '0-5mins'
  '5-10mins'
  '10-15mins'
]

@description('Log Analytics workspace IDs of the regions, in regionKeys order.')
param workspaceIds array

@description('Region keys (primary, secondary), naming the per-region rules.')
param regionKeys array

@description('Event Grid topics (system and custom) of both regions (dead letters).')
param topicIds array

@description('DIMSE gateway container apps of both regions; empty: no gateway.')
param gatewayIds array = []

@description('Follower lag in seconds worth an alert (the follower publishes it as "follower lag_seconds=<n>").')
@minValue(1)
param followerLagSeconds int = 300

@description('Quarantined uploads per region in 15 minutes that count as a spike.')
@minValue(1)
param quarantineSpikeThreshold int = 20

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'dicomflow'
    enabled: true
    emailReceivers: [for (address, i) in emails: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

// --- metric alerts -------------------------------------------------------------------------------------------------

resource originHealth 'Microsoft.Insights/metricAlerts@2026-01-01' = {
  name: 'front-door-origin-health'
  location: 'global'
  tags: tags
  properties: {
    description: 'A Front Door origin (a region\'s app) fails its /api/health probes: traffic is moving to the other region, or the failback gate holds the primary back while its follower catches up.'
    severity: 1
    enabled: true
    scopes: [
      frontDoorProfileId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'originHealth'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'OriginHealthPercentage'
          timeAggregation: 'Average'
          operator: 'LessThan'
          threshold: 90
          dimensions: [
            {
              name: 'Origin'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource serverErrors 'Microsoft.Insights/metricAlerts@2026-01-01' = {
  name: 'front-door-5xx-rate'
  location: 'global'
  tags: tags
  properties: {
    description: 'More than 5% of API answers through Front Door are 5xx.'
    severity: 2
    enabled: true
    scopes: [
      frontDoorProfileId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'serverErrors'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'Percentage5XX'
          timeAggregation: 'Average'
          operator: 'GreaterThan'
          threshold: 5
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource replicationLate 'Microsoft.Insights/metricAlerts@2026-01-01' = [for (policy, i) in replicationPolicyIds: {
  name: 'replication-pending-over-15-min-${i}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Object replication has operations pending for more than 15 minutes (priority replication promises 99% within 15): the data loss window (RPO) is growing.'
    severity: 1
    enabled: true
    scopes: [
      policy
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'pendingPast15Minutes'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'PendingOperationsForReplication'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'TimeBucket'
              operator: 'Exclude'
              values: replicationOnTimeBuckets
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

resource deadLetters 'Microsoft.Insights/metricAlerts@2026-01-01' = [for (topic, i) in topicIds: {
  name: 'event-grid-dead-letters-${i}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid gave up delivering an event and dead-lettered it (container eventgrid-deadletter of that region): an upload not ingested, or an inference or routing event lost until re-driven.'
    severity: 2
    enabled: true
    scopes: [
      topic
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadLettered'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

resource gatewayDown 'Microsoft.Insights/metricAlerts@2026-01-01' = [for (gateway, i) in gatewayIds: {
  name: 'dimse-gateway-unreachable-${i}'
  location: 'global'
  tags: tags
  properties: {
    description: 'A region\'s DIMSE gateway has no running replica: modalities pointed at it cannot store. Switch the gateway name to the other region (docs/deploy.md, failover runbook).'
    severity: 1
    enabled: true
    scopes: [
      gateway
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'noReplica'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'Replicas'
          timeAggregation: 'Maximum'
          operator: 'LessThan'
          threshold: 1
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

// --- log alerts, per region ------------------------------------------------------------------------------------------

resource followerLag 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [for (workspace, i) in workspaceIds: {
  name: 'follower-lag-${regionKeys[i]}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Follower lag over ${followerLagSeconds} s (${regionKeys[i]})'
    description: 'The region indexes what replicated from its peer more than ${followerLagSeconds} s late: after a loss of the peer, that much would be missing until tools reindex --since runs.'
    severity: 2
    enabled: true
    scopes: [
      workspace
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT10M'
    criteria: {
      allOf: [
        {
          query: 'FunctionAppLogs | where Message contains "follower lag_seconds=" | extend lag = todouble(extract("lag_seconds=([0-9.]+)", 1, Message)) | where isnotnull(lag)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'lag'
          operator: 'GreaterThan'
          threshold: followerLagSeconds
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

resource quarantineSpike 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [for (workspace, i) in workspaceIds: {
  name: 'quarantine-spike-${regionKeys[i]}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Quarantine spike (${regionKeys[i]})'
    description: 'More than ${quarantineSpikeThreshold} uploads quarantined in 15 minutes (Dicom.IngestFailed): a sender or a modality is misconfigured, or someone is probing. GET /api/ingest/status says why.'
    severity: 3
    enabled: true
    scopes: [
      workspace
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'FunctionAppLogs | where Message contains ": quarantined ("'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: quarantineSpikeThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

resource poisoned 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [for (workspace, i) in workspaceIds: {
  name: 'poison-queue-${regionKeys[i]}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Messages on a poison queue (${regionKeys[i]})'
    description: 'The Functions host moved a message to a poison queue (e.g. dicom-settle-poison) after its last retry: the redrive timer puts it back with backoff; a burst says storage or a dependency is failing.'
    severity: 3
    enabled: true
    scopes: [
      workspace
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'StorageQueueLogs | where OperationName == "PutMessage" and ObjectKey contains "-poison"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

resource poisonExhausted 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [for (workspace, i) in workspaceIds: {
  name: 'poison-exhausted-${regionKeys[i]}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Re-drive gave up (${regionKeys[i]})'
    description: 'A poisoned message ran out of re-drives, or an expired inbox upload still cannot be ingested (log line poison-exhausted): the work is recorded in eventgrid-deadletter/poison/<queue>/ and needs a person (docs/security.md, nothing lost).'
    severity: 1
    enabled: true
    scopes: [
      workspace
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'FunctionAppLogs | where Message contains "poison-exhausted"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
