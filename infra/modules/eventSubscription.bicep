// One Event Grid subscription from infra/events.json (stage 2: the function code must be deployed, so
// that the functions and the blobs_extension system key exist). Fields use Event Grid's own names and
// pass through unchanged. One module per entry keeps the Bicep inside what the offline parsers read
// (no filtered loops).
//
// Every endpoint is a webhook through the region's Front Door hooks endpoint (frontDoor.bicep), never the app's
// own host name: the apps admit nothing around Front Door (no AzureEventGrid service tag), and Event Grid's
// deliveries pass its WAF like any client's.
// - "blobTrigger": Event Grid-sourced blob trigger, the host's blobs extension:
//   https://<hooks host>/runtime/webhooks/blobs?functionName=Host.Functions.<fn>
// - "eventGridTrigger": the host's Event Grid extension: https://<hooks host>/runtime/webhooks/eventgrid?functionName=<fn>
// The key is the function app host's system key for that extension (listKeys on <app>/host/default, never a storage
// key), sent as the x-functions-key header by a secret delivery attribute: not in the URL, so no log of a URL
// (Front Door's, Event Grid's) holds it.
// Storage system topic subscriptions deliver EventGridSchema; the custom topic's CloudEventSchemaV1_0. Dead letters
// are written with the topic's own system-assigned identity (the storage firewall admits no other).

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

@description('Host name of this region\'s Front Door hooks endpoint (stage 1 output <REGION>_HOOKS_HOST).')
param hooksHost string

var isSystemTopic = topics[entry.topic].kind == 'systemTopic'
var isBlobWebhook = entry.endpoint == 'blobTrigger'
var hookUrl = isBlobWebhook ? 'https://${hooksHost}/runtime/webhooks/blobs?functionName=Host.Functions.${entry.function}' : 'https://${hooksHost}/runtime/webhooks/eventgrid?functionName=${entry.function}'
var extensionKey = isBlobWebhook ? 'blobs_extension' : 'eventgrid_extension'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: site
  name: 'default'
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
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: hookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
        deliveryAttributeMappings: [
          {
            name: 'x-functions-key'
            type: 'Static'
            properties: {
              value: host.listKeys().systemKeys[extensionKey]
              isSecret: true
            }
          }
        ]
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: entry['filter']
    retryPolicy: contains(entry, 'retryPolicy') ? entry.retryPolicy : null
    deadLetterWithResourceIdentity: contains(entry, 'deadLetterContainer') ? {
      identity: {
        type: 'SystemAssigned'
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
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: hookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
        deliveryAttributeMappings: [
          {
            name: 'x-functions-key'
            type: 'Static'
            properties: {
              value: host.listKeys().systemKeys[extensionKey]
              isSecret: true
            }
          }
        ]
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: entry['filter']
    retryPolicy: contains(entry, 'retryPolicy') ? entry.retryPolicy : null
    deadLetterWithResourceIdentity: contains(entry, 'deadLetterContainer') ? {
      identity: {
        type: 'SystemAssigned'
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
