// dicomflow on Azure, stage 1: everything except the Event Grid subscriptions (stage 2,
// infra/stage2/main.bicep, needs the code deployed). Two regions: the primary runs ingestion and
// DICOMweb; the secondary is a warm standby with an object-replicated archive, behind one Front Door.
// Names: CAF prefix (abbreviations.json) + a uniqueString token per region, each overridable.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd env name); part of every resource name token and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Primary (active) region, e.g. westeurope. Needs Flex Consumption and Standard_RAGZRS.')
param primaryLocation string

@minLength(1)
@description('Secondary (passive) region, e.g. swedencentral: object-replicated archive and a standby function app.')
param secondaryLocation string

@description('Override: primary resource group name (default rg-<env>-<primaryLocation>).')
param primaryResourceGroupName string = ''

@description('Override: secondary resource group name (default rg-<env>-<secondaryLocation>).')
param secondaryResourceGroupName string = ''

@description('Override: primary data storage account name (default stdata<token>).')
param primaryDataStorageAccountName string = ''

@description('Override: secondary data storage account name (default stdata<token>).')
param secondaryDataStorageAccountName string = ''

@description('Override: primary function app name (default func-<token>).')
param primaryFunctionAppName string = ''

@description('Override: secondary function app name (default func-<token>).')
param secondaryFunctionAppName string = ''

@description('Override: Front Door profile name (default afd-<token>).')
param frontDoorProfileName string = ''

@description('Days after the last write before archived instances move to the cool tier.')
@minValue(0)
param coolAfterDays int = 30

@description('Days after the last write before archived instances move to the cold tier (more than coolAfterDays).')
@minValue(1)
param coldAfterDays int = 90

@description('Days a blob may stay in the inbox (ingest removes it on success; leftovers are cleaned up).')
@minValue(1)
param inboxRetentionDays int = 7

@description('Days dead-lettered events are kept.')
@minValue(1)
param deadLetterRetentionDays int = 30

@description('Days superseded blob versions are kept before deletion.')
@minValue(1)
param versionRetentionDays int = 90

@description('Days deleted blobs, versions and containers stay recoverable (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Days each archived instance stays immutable (version-level WORM on dicom-archive); 0 = off. Immutable instances cannot be deleted by DICOMweb DELETE.')
@minValue(0)
param archiveImmutabilityDays int = 0

@description('Seconds without new instances before a series counts as stable (DICOMFLOW_STABLE_AGE_SECONDS).')
@minValue(0)
param stableAgeSeconds int = 60

@description('Most instances each function app scales out to.')
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

@description('Zone-redundant Flex Consumption plans (set false for regions without Flex zone redundancy).')
param zoneRedundant bool = true

@description('Front Door routing: 2 = active/passive (secondary takes traffic only when the primary is unhealthy), 1 = active/active.')
@allowed([
  1
  2
])
param secondaryPriority int = 2

@description('Entra ID tenant whose tokens the API accepts (default: the tenant of this deployment).')
param entraTenantId string = tenant().tenantId

@description('Client (application) ID of the API\'s Entra ID app registration: the app accepts tokens issued for it (audience <id> or api://<id>), with app roles reader, writer, admin (docs/deploy.md). Empty: every API call is refused until it is set.')
param apiClientId string = ''

@description('Client ID of the viewer\'s Entra ID app registration (a single-page application). Empty: the API registration signs the viewer in too (one registration with a SPA redirect URI).')
param viewerClientId string = ''

@description('Region of the viewer\'s static web app (Static Web Apps runs in a few regions only).')
@allowed([
  'westeurope'
  'centralus'
  'eastus2'
  'westus2'
  'eastasia'
])
param viewerLocation string = 'westeurope'

@description('More browser origins allowed to call the API (CORS), besides the deployed viewer, e.g. [\'https://viewer.example.org\'].')
param corsAllowedOrigins array = []

@description('Optional: name of a Key Vault secret (same name in each region\'s vault) holding Functions keys that machine clients may send as x-functions-key (comma-separated, reader and writer roles). Empty: bearer tokens only.')
param functionKeysSecretName string = ''

@description('Optional: object ID of the deploying user or group, granted Storage Blob Data Owner on both data accounts (to upload test files).')
param principalId string = ''

@description('Extra tags for every resource.')
param tags object = {}

@description('DIMSE gateway image (built from the Dockerfile, e.g. with az acr build); empty: no gateway. Deployed in the primary region.')
param gatewayImage string = ''

@description('DIMSE gateway: calling AE titles allowed (comma-separated; empty: any that reach the port).')
param gatewayAllowedAeTitles string = ''

@description('DIMSE gateway: source networks allowed (comma-separated CIDRs; empty: any that reach the port).')
param gatewayAllowedNetworks string = ''

@description('DIMSE gateway: Key Vault secret URI of its TLS certificate (PEM); empty: plain TCP inside the network.')
param gatewayTlsCertificateSecretUri string = ''

@description('DIMSE gateway: expose its TCP port outside its virtual network (default: internal, over VPN/ExpressRoute).')
param gatewayExternalIngress bool = false

var abbrs = loadJsonContent('abbreviations.json')
// Sign-in: the app validates Entra ID v2 access tokens itself (shared/auth); App Service authentication is not
// used (it cannot be relied on in Flex Consumption). Local development differs only in issuer and audience.
var authIssuer = '${environment().authentication.loginEndpoint}${entraTenantId}/v2.0'
var authAudience = empty(apiClientId) ? '' : '${apiClientId},api://${apiClientId}'
var viewerSignInClientId = empty(viewerClientId) ? apiClientId : viewerClientId
var viewerOrigins = [
  'https://${viewer.outputs.defaultHostName}'
]
// The browser origins that may call DICOMweb (DICOMFLOW_CORS_ORIGINS): the viewer plus corsAllowedOrigins.
var corsOrigins = join(union(viewerOrigins, corsAllowedOrigins), ',')
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var primaryToken = toLower(uniqueString(subscription().id, environmentName, primaryLocation))
var secondaryToken = toLower(uniqueString(subscription().id, environmentName, secondaryLocation))

// The app's storage names. They are owned by the code: tests/infra checks these lists against
// shared/storage/layout.py (CONTAINERS, QUEUES) and shared/index/tables.py (TABLES).
var inboxContainer = 'dicom-inbox'
var archiveContainer = 'dicom-archive'
var metadataContainer = 'dicom-metadata'
var quarantineContainer = 'dicom-quarantine'
var configContainer = 'dicomflow-config'
var deadLetterContainer = 'eventgrid-deadletter'
var appContainers = [
  inboxContainer
  archiveContainer
  metadataContainer
  quarantineContainer
  configContainer
  deadLetterContainer
]
var appQueues = [
  'dicom-settle'
]
var appTables = [
  'dicominstances'
  'dicomseries'
  'dicomstudies'
  'dicomlookup'
  'dicomuidlookup'
  'dicompending'
  'dicomchangefeed'
  'dicomdeliveries'
]
// Replicated to the secondary region (blobs only: Table storage is geo-replicated by RAGZRS instead).
var replicatedContainers = [
  archiveContainer
  metadataContainer
]
var deploymentContainer = 'app-package'

var lifecycleRules = [
  {
    name: 'archive-tiering'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${archiveContainer}/'
        ]
      }
      actions: {
        baseBlob: {
          tierToCool: {
            daysAfterModificationGreaterThan: coolAfterDays
          }
          tierToCold: {
            daysAfterModificationGreaterThan: coldAfterDays
          }
        }
      }
    }
  }
  {
    name: 'inbox-cleanup'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${inboxContainer}/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: inboxRetentionDays
          }
        }
        version: {
          delete: {
            daysAfterCreationGreaterThan: inboxRetentionDays
          }
        }
      }
    }
  }
  {
    name: 'deadletter-cleanup'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${deadLetterContainer}/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: deadLetterRetentionDays
          }
        }
      }
    }
  }
  {
    name: 'old-versions'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
      }
      actions: {
        version: {
          delete: {
            daysAfterCreationGreaterThan: versionRetentionDays
          }
        }
      }
    }
  }
]

var primaryNames = {
  identity: '${abbrs.managedIdentityUserAssignedIdentities}${primaryToken}'
  logAnalytics: '${abbrs.operationalInsightsWorkspaces}${primaryToken}'
  applicationInsights: '${abbrs.insightsComponents}${primaryToken}'
  dataStorage: !empty(primaryDataStorageAccountName) ? primaryDataStorageAccountName : '${abbrs.storageStorageAccounts}data${primaryToken}'
  hostStorage: '${abbrs.storageStorageAccounts}host${primaryToken}'
  keyVault: '${abbrs.keyVaultVaults}${primaryToken}'
  systemTopic: '${abbrs.eventGridSystemTopics}${primaryToken}'
  customTopic: '${abbrs.eventGridDomainsTopics}${primaryToken}'
  functionApp: !empty(primaryFunctionAppName) ? primaryFunctionAppName : '${abbrs.webSitesFunctions}${primaryToken}'
  plan: '${abbrs.webServerFarms}${primaryToken}'
  gatewayIdentity: '${abbrs.managedIdentityUserAssignedIdentities}gw-${primaryToken}'
  gateway: '${abbrs.appContainerApps}gw-${primaryToken}'
  gatewayEnvironment: '${abbrs.appManagedEnvironments}${primaryToken}'
  gatewayVnet: '${abbrs.networkVirtualNetworks}gw-${primaryToken}'
}
var secondaryNames = {
  identity: '${abbrs.managedIdentityUserAssignedIdentities}${secondaryToken}'
  logAnalytics: '${abbrs.operationalInsightsWorkspaces}${secondaryToken}'
  applicationInsights: '${abbrs.insightsComponents}${secondaryToken}'
  dataStorage: !empty(secondaryDataStorageAccountName) ? secondaryDataStorageAccountName : '${abbrs.storageStorageAccounts}data${secondaryToken}'
  hostStorage: '${abbrs.storageStorageAccounts}host${secondaryToken}'
  keyVault: '${abbrs.keyVaultVaults}${secondaryToken}'
  systemTopic: '${abbrs.eventGridSystemTopics}${secondaryToken}'
  customTopic: '${abbrs.eventGridDomainsTopics}${secondaryToken}'
  functionApp: !empty(secondaryFunctionAppName) ? secondaryFunctionAppName : '${abbrs.webSitesFunctions}${secondaryToken}'
  plan: '${abbrs.webServerFarms}${secondaryToken}'
  gatewayIdentity: '${abbrs.managedIdentityUserAssignedIdentities}gw-${secondaryToken}'
  gateway: '${abbrs.appContainerApps}gw-${secondaryToken}'
  gatewayEnvironment: '${abbrs.appManagedEnvironments}${secondaryToken}'
  gatewayVnet: '${abbrs.networkVirtualNetworks}gw-${secondaryToken}'
}

resource primaryGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(primaryResourceGroupName) ? primaryResourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}-${primaryLocation}'
  location: primaryLocation
  tags: allTags
}

resource secondaryGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(secondaryResourceGroupName) ? secondaryResourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}-${secondaryLocation}'
  location: secondaryLocation
  tags: allTags
}

module primary 'modules/region.bicep' = {
  name: 'dicomflow-primary'
  scope: primaryGroup
  params: {
    location: primaryLocation
    tags: allTags
    names: primaryNames
    containers: appContainers
    queues: appQueues
    tables: appTables
    lifecycleRules: lifecycleRules
    immutableContainer: archiveImmutabilityDays > 0 ? archiveContainer : ''
    immutabilityDays: archiveImmutabilityDays
    softDeleteDays: softDeleteDays
    deploymentContainer: deploymentContainer
    stableAgeSeconds: stableAgeSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysSecretName: functionKeysSecretName
    userPrincipalId: principalId
    gatewayImage: gatewayImage
    gatewayAllowedAeTitles: gatewayAllowedAeTitles
    gatewayAllowedNetworks: gatewayAllowedNetworks
    gatewayTlsCertificateSecretUri: gatewayTlsCertificateSecretUri
    gatewayExternalIngress: gatewayExternalIngress
  }
}

module secondary 'modules/region.bicep' = {
  name: 'dicomflow-secondary'
  scope: secondaryGroup
  params: {
    location: secondaryLocation
    tags: allTags
    names: secondaryNames
    containers: appContainers
    queues: appQueues
    tables: appTables
    lifecycleRules: lifecycleRules
    immutableContainer: archiveImmutabilityDays > 0 ? archiveContainer : ''
    immutabilityDays: archiveImmutabilityDays
    softDeleteDays: softDeleteDays
    deploymentContainer: deploymentContainer
    stableAgeSeconds: stableAgeSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysSecretName: functionKeysSecretName
    userPrincipalId: principalId
  }
}

// Object replication primary -> secondary: destination policy first (Azure assigns the policy and
// rule IDs), then the source policy with those IDs.
module replicationDestination 'modules/objectReplication.bicep' = {
  name: 'replication-destination'
  scope: secondaryGroup
  params: {
    accountName: secondary.outputs.dataStorageAccountName
    policyId: 'default'
    sourceAccountId: primary.outputs.dataStorageAccountId
    destinationAccountId: secondary.outputs.dataStorageAccountId
    containers: replicatedContainers
  }
}

module replicationSource 'modules/objectReplication.bicep' = {
  name: 'replication-source'
  scope: primaryGroup
  params: {
    accountName: primary.outputs.dataStorageAccountName
    policyId: replicationDestination.outputs.policyId
    sourceAccountId: primary.outputs.dataStorageAccountId
    destinationAccountId: secondary.outputs.dataStorageAccountId
    containers: replicatedContainers
    ruleIds: replicationDestination.outputs.ruleIds
  }
}

module frontDoor 'modules/frontDoor.bicep' = {
  name: 'front-door'
  scope: primaryGroup
  params: {
    tags: allTags
    profileName: !empty(frontDoorProfileName) ? frontDoorProfileName : '${abbrs.cdnProfiles}${primaryToken}'
    endpointName: '${abbrs.cdnProfilesEndpoints}${primaryToken}'
    primaryHostName: primary.outputs.functionAppHostName
    secondaryHostName: secondary.outputs.functionAppHostName
    secondaryPriority: secondaryPriority
    logAnalyticsWorkspaceId: primary.outputs.logAnalyticsWorkspaceId
  }
}

// The OHIF viewer: a static web app signing in with Entra ID (azd service 'viewer' uploads viewer/site, built
// by its prepackage hook from the outputs below).
module viewer 'modules/staticSite.bicep' = {
  name: 'viewer'
  scope: primaryGroup
  params: {
    location: viewerLocation
    tags: allTags
    name: '${abbrs.webStaticSites}${primaryToken}'
  }
}

// Outputs become azd environment values; stage 2 (infra/stage2) and the postdeploy hook read them.
output AZURE_LOCATION string = primaryLocation
output PRIMARY_RESOURCE_GROUP string = primaryGroup.name
output SECONDARY_RESOURCE_GROUP string = secondaryGroup.name
output PRIMARY_FUNCTION_APP_NAME string = primary.outputs.functionAppName
output SECONDARY_FUNCTION_APP_NAME string = secondary.outputs.functionAppName
output PRIMARY_DATA_STORAGE_ACCOUNT string = primary.outputs.dataStorageAccountName
output SECONDARY_DATA_STORAGE_ACCOUNT string = secondary.outputs.dataStorageAccountName
output PRIMARY_IDENTITY_NAME string = primary.outputs.identityName
output SECONDARY_IDENTITY_NAME string = secondary.outputs.identityName
output PRIMARY_SYSTEM_TOPIC string = primary.outputs.systemTopicName
output SECONDARY_SYSTEM_TOPIC string = secondary.outputs.systemTopicName
output PRIMARY_CUSTOM_TOPIC string = primary.outputs.customTopicName
output SECONDARY_CUSTOM_TOPIC string = secondary.outputs.customTopicName
output PRIMARY_KEY_VAULT string = primary.outputs.keyVaultName
output FRONT_DOOR_ENDPOINT string = 'https://${frontDoor.outputs.endpointHostName}'
output DICOMWEB_ROOT string = 'https://${frontDoor.outputs.endpointHostName}/api/dicomweb'
output AUTH_ISSUER string = authIssuer
output API_CLIENT_ID string = apiClientId
output VIEWER_CLIENT_ID string = viewerSignInClientId
output VIEWER_URL string = 'https://${viewer.outputs.defaultHostName}/'
