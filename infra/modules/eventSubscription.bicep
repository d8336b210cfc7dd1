// One Event Grid subscription from infra/events.json (stage 2: the function code must be deployed, so
// that the functions and the blobs_extension system key exist). Fields use Event Grid's own names and
// pass through unchanged. One module per entry keeps the Bicep inside what the offline parsers read
// (no filtered loops).
//
// Endpoints:
// - "blobTrigger": Event Grid-sourced blob trigger, a webhook to the host's blobs extension:
//   https://<defaultHostName>/runtime/webhooks/blobs?functionName=Host.Functions.<fn>&code=<blobs_extension key>
//   The key is the function app host's system key (listKeys on <app>/host/default), never a storage key.
// - "eventGridTrigger": an AzureFunction endpoint (<app>/functions/<fn>).
// Storage system topic subscriptions deliver EventGridSchema; the custom topic's CloudEventSchemaV1_0.

@description('One entry of infra/events.json "subscriptions".')
param entry object

@description('The "topics" object of infra/events.json (kind systemTopic or customTopic per topic key).')
param topics object

@description('Function app that receives the events.')
param functionAppName string

@description('Name of the storage account system topic.')
param systemTopicName string

@description('Name of the custom topic.')
param customTopicName string

@description('Storage account that receives dead-lettered events.')
param deadLetterStorageAccountName string

@description('Event Grid\'s own user-assigned identity (assigned to both topics): it writes dead-lettered events, nothing else.')
param identityName string

var isSystemTopic = topics[entry.topic].kind == 'systemTopic'
var isBlobWebhook = entry.endpoint == 'blobTrigger'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: site
  name: 'default'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource deadLetterAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterStorageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource customTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: customTopicName
}

resource systemSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (isSystemTopic) {
  parent: systemTopic
  name: entry.name
  properties: {
    destination: isBlobWebhook ? {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${entry.function}&code=${host.listKeys().systemKeys.blobs_extension}'
      }
    } : {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/${entry.function}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: entry['filter']
    retryPolicy: contains(entry, 'retryPolicy') ? entry.retryPolicy : null
    deadLetterWithResourceIdentity: contains(entry, 'deadLetterContainer') ? {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identity.id
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterAccount.id
          blobContainerName: entry.deadLetterContainer
        }
      }
    } : null
  }
}

resource customSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = if (!isSystemTopic) {
  parent: customTopic
  name: entry.name
  properties: {
    destination: isBlobWebhook ? {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${entry.function}&code=${host.listKeys().systemKeys.blobs_extension}'
      }
    } : {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/${entry.function}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: entry['filter']
    retryPolicy: contains(entry, 'retryPolicy') ? entry.retryPolicy : null
    deadLetterWithResourceIdentity: contains(entry, 'deadLetterContainer') ? {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identity.id
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterAccount.id
          blobContainerName: entry.deadLetterContainer
        }
      }
    } : null
  }
}
