// dicomflow on Azure, stage 2: the Event Grid subscriptions of infra/events.json, in both regions.
// Run after stage 1 AND after the code is deployed to both function apps (the functions and the
// blobs_extension system key exist only then). azd runs it from the postdeploy hook in azure.yaml.
targetScope = 'subscription'

@description('Primary resource group (stage 1 output PRIMARY_RESOURCE_GROUP).')
param primaryResourceGroup string

@description('Secondary resource group (stage 1 output SECONDARY_RESOURCE_GROUP).')
param secondaryResourceGroup string

@description('Primary function app (PRIMARY_FUNCTION_APP_NAME).')
param primaryFunctionAppName string

@description('Secondary function app (SECONDARY_FUNCTION_APP_NAME).')
param secondaryFunctionAppName string

@description('Primary data storage account (PRIMARY_DATA_STORAGE_ACCOUNT): its system topic and dead letters.')
param primaryDataStorageAccount string

@description('Secondary data storage account (SECONDARY_DATA_STORAGE_ACCOUNT).')
param secondaryDataStorageAccount string

@description('Front Door hooks endpoint of the primary region\'s app (PRIMARY_HOOKS_HOST): Event Grid delivers there.')
param primaryHooksHost string

@description('Front Door hooks endpoint of the secondary region\'s app (SECONDARY_HOOKS_HOST).')
param secondaryHooksHost string

@description('Primary storage system topic (PRIMARY_SYSTEM_TOPIC).')
param primarySystemTopic string

@description('Secondary storage system topic (SECONDARY_SYSTEM_TOPIC).')
param secondarySystemTopic string

@description('Primary custom topic (PRIMARY_CUSTOM_TOPIC).')
param primaryCustomTopic string

@description('Secondary custom topic (SECONDARY_CUSTOM_TOPIC).')
param secondaryCustomTopic string

// The single source of the subscriptions, shared with the local event fabric (devhost).
var events = loadJsonContent('../events.json')

module primarySubscriptions '../modules/eventSubscription.bicep' = [for entry in events.subscriptions: {
  name: 'evgs-primary-${entry.name}'
  scope: resourceGroup(primaryResourceGroup)
  params: {
    entry: entry
    topics: events.topics
    functionAppName: primaryFunctionAppName
    systemTopicName: primarySystemTopic
    customTopicName: primaryCustomTopic
    deadLetterStorageAccountName: primaryDataStorageAccount
    hooksHost: primaryHooksHost
  }
}]

module secondarySubscriptions '../modules/eventSubscription.bicep' = [for entry in events.subscriptions: {
  name: 'evgs-secondary-${entry.name}'
  scope: resourceGroup(secondaryResourceGroup)
  params: {
    entry: entry
    topics: events.topics
    functionAppName: secondaryFunctionAppName
    systemTopicName: secondarySystemTopic
    customTopicName: secondaryCustomTopic
    deadLetterStorageAccountName: secondaryDataStorageAccount
    hooksHost: secondaryHooksHost
  }
}]
