// One region's stack: monitoring, identity, data + host storage, Key Vault, Event Grid topics, the
// function app and its role assignments. main.bicep deploys it once per region.

@description('Azure region of this stack.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource names for this region (computed in main.bicep from the CAF prefixes and the token).')
param names object

@description('The app\'s blob containers (shared/storage/layout.py CONTAINERS).')
param containers array

@description('The app\'s queues (shared/storage/layout.py QUEUES).')
param queues array

@description('The app\'s tables (shared/index/tables.py TABLES).')
param tables array

@description('Lifecycle management rules for the data account.')
param lifecycleRules array

@description('Container of the data account that gets version-level immutability; empty for none.')
param immutableContainer string = ''

@description('Days each archived blob version stays immutable (0 = off).')
@minValue(0)
param immutabilityDays int = 0

@description('Days deleted blobs, versions and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Container on the host account for the Flex Consumption deployment package.')
param deploymentContainer string

@description('DICOMFLOW_STABLE_AGE_SECONDS for the app.')
@minValue(0)
param stableAgeSeconds int = 60

@description('Most instances the function app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Zone-redundant Flex Consumption plan.')
param zoneRedundant bool = true

@description('Issuer of accepted bearer tokens (DICOMFLOW_AUTH_ISSUER), e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param authIssuer string

@description('Accepted token audiences, comma-separated (DICOMFLOW_AUTH_AUDIENCE); empty refuses every API call.')
param authAudience string = ''

@description('Browser origins allowed to call the API, comma-separated (DICOMFLOW_CORS_ORIGINS).')
param corsOrigins string = ''

@description('Optional Key Vault secret (in this region\'s vault) with Functions keys for machine clients.')
param functionKeysSecretName string = ''

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Optional user or group object ID granted Storage Blob Data Owner on the data account.')
param userPrincipalId string = ''

@description('DIMSE gateway image; empty: no gateway in this region.')
param gatewayImage string = ''

@description('DIMSE gateway: calling AE titles allowed (comma-separated; empty: any).')
param gatewayAllowedAeTitles string = ''

@description('DIMSE gateway: source networks allowed (comma-separated CIDRs; empty: any).')
param gatewayAllowedNetworks string = ''

@description('DIMSE gateway: Key Vault secret URI of its TLS certificate; empty: plain TCP.')
param gatewayTlsCertificateSecretUri string = ''

@description('DIMSE gateway: expose the TCP port outside its virtual network.')
param gatewayExternalIngress bool = false

var deployGateway = !empty(gatewayImage)

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

// The DIMSE gateway runs as its own identity: it needs far less than the function app.
resource gatewayIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (deployGateway) {
  name: names.gatewayIdentity
  location: location
  tags: tags
}

module monitoring 'monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    retentionInDays: logRetentionInDays
  }
}

module dataStorage 'storage.bicep' = {
  name: 'data-storage'
  params: {
    name: names.dataStorage
    location: location
    tags: tags
    containers: containers
    queues: queues
    tables: tables
    lifecycleRules: lifecycleRules
    softDeleteDays: softDeleteDays
    immutableContainer: immutableContainer
    immutabilityDays: immutabilityDays
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module hostStorage 'storage.bicep' = {
  name: 'host-storage'
  params: {
    name: names.hostStorage
    location: location
    tags: tags
    containers: [
      deploymentContainer
    ]
    softDeleteDays: softDeleteDays
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVault 'keyVault.bicep' = {
  name: 'key-vault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module eventGrid 'eventGrid.bicep' = {
  name: 'event-grid'
  params: {
    location: location
    tags: tags
    storageAccountId: dataStorage.outputs.id
    systemTopicName: names.systemTopic
    customTopicName: names.customTopic
    identityId: identity.id
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module roles 'roleAssignments.bicep' = {
  name: 'role-assignments'
  params: {
    principalId: identity.properties.principalId
    dataStorageAccountName: dataStorage.outputs.name
    hostStorageAccountName: hostStorage.outputs.name
    customTopicName: eventGrid.outputs.customTopicName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    userPrincipalId: userPrincipalId
    gatewayPrincipalId: deployGateway ? gatewayIdentity!.properties.principalId : ''
  }
}

module gateway 'gateway.bicep' = if (deployGateway) {
  name: 'dimse-gateway'
  params: {
    location: location
    tags: tags
    environmentName: names.gatewayEnvironment
    name: names.gateway
    vnetName: names.gatewayVnet
    identityId: gatewayIdentity!.id
    identityClientId: gatewayIdentity!.properties.clientId
    image: gatewayImage
    dataBlobEndpoint: dataStorage.outputs.blobEndpoint
    dataTableEndpoint: dataStorage.outputs.tableEndpoint
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    allowedAeTitles: gatewayAllowedAeTitles
    allowedNetworks: gatewayAllowedNetworks
    tlsCertificateSecretUri: gatewayTlsCertificateSecretUri
    externalIngress: gatewayExternalIngress
  }
  // The identity must hold its roles before the first replica reads the index and the config container.
  dependsOn: [
    roles
  ]
}

module functionApp 'functionApp.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: tags
    name: names.functionApp
    planName: names.plan
    identityId: identity.id
    identityClientId: identity.properties.clientId
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    hostQueueEndpoint: hostStorage.outputs.queueEndpoint
    hostTableEndpoint: hostStorage.outputs.tableEndpoint
    deploymentContainer: deploymentContainer
    dataBlobEndpoint: dataStorage.outputs.blobEndpoint
    dataQueueEndpoint: dataStorage.outputs.queueEndpoint
    dataTableEndpoint: dataStorage.outputs.tableEndpoint
    topicEndpoint: eventGrid.outputs.customTopicEndpoint
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    stableAgeSeconds: stableAgeSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysReference: empty(functionKeysSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${functionKeysSecretName})'
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
  // The host must be able to read its deployment package and storage when it first starts.
  dependsOn: [
    roles
  ]
}

output dataStorageAccountId string = dataStorage.outputs.id
output dataStorageAccountName string = dataStorage.outputs.name
output dataBlobEndpoint string = dataStorage.outputs.blobEndpoint
output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output identityName string = identity.name
output systemTopicName string = eventGrid.outputs.systemTopicName
output customTopicName string = eventGrid.outputs.customTopicName
output customTopicEndpoint string = eventGrid.outputs.customTopicEndpoint
output keyVaultName string = keyVault.outputs.name
output logAnalyticsWorkspaceId string = monitoring.outputs.logAnalyticsWorkspaceId
output gatewayName string = deployGateway ? gateway!.outputs.name : ''
