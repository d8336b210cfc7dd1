// dicomflow on Azure, stage 1: everything except the Event Grid subscriptions (stage 2,
// infra/stage2/main.bicep, needs the code deployed). Two regions behind one Front Door: the primary takes
// the traffic; the secondary holds a replica of the primary's archive, quarantine and configuration, keeps
// its own index of them (it follows the primary's change feed), and takes over reads and writes when the
// primary is lost. Each region writes only its own containers (<name>-primary / <name>-secondary); object
// replication (priority replication, with its metrics) copies each region's to the other, in both directions,
// so no failover step touches storage.
// Three resource groups: one per region, and a global one (Front Door and its WAF policy, the private DNS zones,
// the viewer, the alerts) in neither region's hands, so it stays manageable when either region is lost.
// Private by default: private endpoints, VNet integration, firewalls that deny the public internet; clients reach
// the apps only through Front Door (Private Link), Event Grid too (webhooks through Front Door, never around it).
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

@description('Override: the global resource group name (default rg-<env>-global): Front Door, its WAF policy, private DNS, the viewer, the alerts.')
param globalResourceGroupName string = ''

@minLength(1)
@description('Region that holds the global resource group\'s metadata (and its Log Analytics workspace and log alert rules). Not the primary: what is managed there (Front Door origins, the gateway name) must stay manageable while the primary region is lost. Default: the secondary; a third region is better still.')
param globalLocation string = secondaryLocation

@description('Days before archived instances move to the cool tier (counted from tieringBasis). Cool and cold keep WADO-RS reads immediate.')
@minValue(0)
param coolAfterDays int = 30

@description('Days before archived instances move to the cold tier (more than coolAfterDays).')
@minValue(1)
param coldAfterDays int = 90

@description('What the tiering days count from: creation (predictable: the cost model in docs/capacity.md) or lastAccess (instances read again stay hot: access-time tracking on, and a read moves a cool blob back to hot).')
@allowed([
  'creation'
  'lastAccess'
])
param tieringBasis string = 'creation'

@description('Days after which PREVIOUS versions of archived instances (a replaced instance, the losing side of a write in both regions) move to the cold tier; 0 = never. Not the archive tier: Standard_RAGZRS accounts do not offer it (and object replication cannot copy an archived blob).')
@minValue(0)
param versionColdAfterDays int = 0

@description('Days an inbox blob is kept once its outcome is recorded: the app\'s inbox_retention timer deletes it then (a blob without an outcome is ingested again, never deleted); the lifecycle rule only removes older versions of inbox blobs after this many days.')
@minValue(1)
param inboxRetentionDays int = 7

@description('Days a transcoded frame or rendered image stays in the dicom-cache container (recomputed when asked again).')
@minValue(1)
param cacheRetentionDays int = 30

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

@description('Days each archived instance stays immutable (a time-based policy on each region\'s own archive, which supports version-level WORM from its creation, so this can be turned on at any later deployment); 0 = off. Immutable instances cannot be deleted by DICOMweb DELETE.')
@minValue(0)
param archiveImmutabilityDays int = 0

@description('Days each audit record is kept unchangeable: the audit container has a time-based retention policy that allows appends only (container-level WORM). 2190 days = 6 years.')
@minValue(1)
@maxValue(146000)
param auditRetentionDays int = 2190

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

@description('Zone-redundant Flex Consumption plan (and DIMSE gateway environment) in the primary region: on by default (generally available). Turn off only in a region that does not offer it (Get-AzFunctionAppAvailableLocation -PlanType FlexConsumption -OSType Linux -ZoneRedundancy); it keeps at least two always-ready instances per function group, billed.')
param primaryZoneRedundant bool = true

@description('Zone redundancy in the secondary region (as primaryZoneRedundant).')
param secondaryZoneRedundant bool = true

@description('Front Door: false (default) = active/passive, the secondary takes traffic only when the primary\'s health probe fails; true = reads (GET, HEAD, OPTIONS) from both regions, writes (STOW-RS, DELETE) still to the primary while it is healthy.')
param activeActiveReads bool = false

@description('Private networking (default true): the PHI data accounts, Key Vault and the custom Event Grid topic get private endpoints and their firewalls deny the public internet (trusted Azure services acting with their own identity excepted: Event Grid dead-lettering); the function apps reach them through VNet integration and are reached only through Front Door Premium over Private Link; the DIMSE gateways run in the regions\' networks; the two networks are peered (the follower reads the peer\'s change feed). false: public endpoints (Entra ID only), the apps\' public endpoints admit Front Door alone (service tag and this profile\'s X-Azure-FDID).')
param privateNetworking bool = true

@description('The primary region\'s network (privateNetworking): address space, the function app\'s subnet, the private endpoints\' subnet, the DIMSE gateway\'s subnet (Container Apps: /27 or larger).')
param primaryNetworkPrefixes object = {
  addressPrefix: '10.40.0.0/22'
  apps: '10.40.0.0/24'
  endpoints: '10.40.1.0/24'
  gateway: '10.40.2.0/27'
}

@description('The secondary region\'s network (privateNetworking), not overlapping the primary\'s.')
param secondaryNetworkPrefixes object = {
  addressPrefix: '10.41.0.0/22'
  apps: '10.41.0.0/24'
  endpoints: '10.41.1.0/24'
  gateway: '10.41.2.0/27'
}

@description('Failback gate held by the operator: false keeps Front Door from sending API traffic to the primary region (its origins Disabled) whatever its health probe says. The runbook sets it live with az afd origin update --enabled-state; azd passes PRIMARY_ORIGIN_ENABLED so a redeployment keeps it (docs/deploy.md, failover runbook).')
param primaryOriginEnabled bool = true

@description('The region that takes direct uploads (the DIMSE gateway name and the Front Door inbox endpoint point there): primary, or secondary while the primary is lost. azd passes INGEST_REGION so a redeployment keeps the runbook\'s switch.')
@allowed([
  'primary'
  'secondary'
])
param ingestRegion string = 'primary'

@description('Failback gate in the app: the primary\'s /api/health answers 503 (catching up) while its follower is this many seconds or more behind the secondary, so Front Door returns traffic to it only once it has caught up; 0 = off. Set on the primary only: the secondary must answer while the primary is lost.')
@minValue(0)
param failbackMaxLagSeconds int = 300

@description('Web application firewall: Prevention blocks what the managed rule set and the rate limit match; Detection only logs (to tune false positives before blocking).')
@allowed([
  'Prevention'
  'Detection'
])
param wafMode string = 'Prevention'

@description('Rate limit: most requests to /api/* per client address per minute at each Front Door edge; more are blocked (the WAF\'s block response) until the minute ends. Mind a hospital\'s NAT: one address may be many users.')
@minValue(100)
param wafRateLimitPerMinute int = 6000

@description('E-mail addresses the action group notifies when an alert fires (Front Door origin health, replication, follower lag, dead letters, poison queues, 5xx, quarantine spike, gateway down).')
param alertEmails array = []

@description('Quarantined uploads per region in 15 minutes that count as a spike worth an alert.')
@minValue(1)
param quarantineSpikeThreshold int = 20

@description('Object replication primary -> secondary: the policy ID Azure assigned on the first deployment (output REPLICATION_POLICY_TO_SECONDARY; azd passes it back). Empty on the first deployment only.')
param replicationPolicyToSecondary string = ''

@description('Object replication primary -> secondary: its rule IDs, comma-separated in container order (output REPLICATION_RULES_TO_SECONDARY). Empty on the first deployment only.')
param replicationRulesToSecondary string = ''

@description('Object replication secondary -> primary: the policy ID Azure assigned on the first deployment (output REPLICATION_POLICY_TO_PRIMARY).')
param replicationPolicyToPrimary string = ''

@description('Object replication secondary -> primary: its rule IDs, comma-separated (output REPLICATION_RULES_TO_PRIMARY).')
param replicationRulesToPrimary string = ''

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

@secure()
@minLength(15)
@description('Salt of the audit trail\'s Patient ID digests (DICOMFLOW_AUDIT_PATIENT_SALT): written to each region\'s vault as the secret audit-patient-salt (one value in both regions), which both function apps and both DIMSE gateways read. azd fills it (main.parameters.json): random on the first deployment, read back from the primary\'s vault (PRIMARY_KEY_VAULT) afterwards. Without azd pass the existing one back (docs/deploy.md): a new salt makes earlier records unfindable by patient.')
param auditPatientSalt string

@description('Object ID of the deploying user or group (azd passes AZURE_PRINCIPAL_ID). It gets no data-plane role unless grantDeployerDataAccess is true, except Key Vault Secrets User on the audit salt secret in the primary\'s vault (azd reads it back before each deployment).')
param principalId string = ''

@description('Grant principalId Storage Blob Data Contributor on both data accounts (PHI), e.g. to upload test files. Default false: no standing access to patient data for the deployer.')
param grantDeployerDataAccess bool = false

@description('Extra tags for every resource.')
param tags object = {}

@description('DIMSE gateway image (built from the Dockerfile, e.g. with az acr build); empty: no gateway. Deployed in both regions, behind one name (gatewayDnsZone).')
param gatewayImage string = ''

@description('DIMSE gateway: calling AE titles allowed (comma-separated). The gateway listens beyond loopback in Azure, so the deployment refuses to run it without this list or mutual TLS (gatewayTlsCertificateSecretName and gatewayTlsClientCaCertificate).')
param gatewayAllowedAeTitles string = ''

@description('DIMSE gateway: source networks allowed (comma-separated CIDRs; empty: any that reach the port).')
param gatewayAllowedNetworks string = ''

@description('DIMSE gateway: name of the Key Vault secret (PEM certificate with its key) in each region\'s vault; empty: plain TCP inside the network. The gateway\'s identity may read this one secret and nothing else of the vault.')
param gatewayTlsCertificateSecretName string = ''

@description('DIMSE gateway: PEM of the CA that signs the modalities\' client certificates (public, not a secret); with a certificate, clients must present one it signed (mutual TLS). Empty: server-side TLS only.')
param gatewayTlsClientCaCertificate string = ''

@description('DIMSE gateway: expose its TCP port outside its virtual network (default: internal, over VPN/ExpressRoute).')
param gatewayExternalIngress bool = false

@description('DIMSE gateway: the private DNS zone of the name modalities keep (dimse.<zone>, pointing at the gateway of ingestRegion, TTL 30 s); link it to the hospital\'s DNS (a conditional forwarder to a DNS private resolver).')
param gatewayDnsZone string = 'dicomflow-${environmentName}.internal'

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
// The global resources' token: the environment alone (they belong to neither region).
var globalToken = toLower(uniqueString(subscription().id, environmentName, 'global'))

// The app's storage names. They are owned by the code: tests/infra checks these lists against
// shared/storage/layout.py (LOCAL, REGIONAL, QUEUES) and shared/index/tables.py (TABLES).
var inboxContainer = 'dicom-inbox'
var archiveContainer = 'dicom-archive'
var metadataContainer = 'dicom-metadata'
var quarantineContainer = 'dicom-quarantine'
var configContainer = 'dicomflow-config'
var deadLetterContainer = 'eventgrid-deadletter'
var auditContainer = 'dicom-audit'
var cacheContainer = 'dicom-cache'
// In each region, never replicated: uploads, what each region derives itself (frame indexes, bundles), dead letters,
// the audit trail (append blobs, which object replication does not copy), and the cache of transcoded frames and
// rendered images.
var localContainers = [
  inboxContainer
  metadataContainer
  deadLetterContainer
  auditContainer
  cacheContainer
]
// Written by each region as '<name>-<region key>' and replicated to the other region (read-only there).
var regionalContainers = [
  archiveContainer
  quarantineContainer
  configContainer
]
var appQueues = [
  'dicom-settle'
  'dicom-ingest-batch'
  'dicom-operations'
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
  'dicomsync'
  'dicomextendedtags'
  'dicomoperations'
]
// The region keys (DICOMFLOW_REGION): part of container names, so fixed at deployment, not roles.
var primaryKey = 'primary'
var secondaryKey = 'secondary'
var primaryWrites = [for c in regionalContainers: '${c}-${primaryKey}']
var secondaryWrites = [for c in regionalContainers: '${c}-${secondaryKey}']
var deploymentContainer = 'app-package'
// The Key Vault secret of the audit trail's patient salt, the same name in both vaults. main.parameters.json names it
// too (azd's read-back runs before Bicep): tests/infra checks the two agree.
var auditPatientSaltSecretName = 'audit-patient-salt'

// Tiering of every archive container of an account (its own and the peer's replica: the prefix matches both).
var tierByCreation = {
  tierToCool: {
    daysAfterCreationGreaterThan: coolAfterDays
  }
  tierToCold: {
    daysAfterCreationGreaterThan: coldAfterDays
  }
}
var tierByAccess = {
  enableAutoTierToHotFromCool: true
  tierToCool: {
    daysAfterLastAccessTimeGreaterThan: coolAfterDays
  }
  tierToCold: {
    daysAfterLastAccessTimeGreaterThan: coldAfterDays
  }
}
var baseTiering = tieringBasis == 'lastAccess' ? tierByAccess : tierByCreation
var archiveActions = versionColdAfterDays > 0 ? {
  baseBlob: baseTiering
  version: {
    tierToCold: {
      daysAfterCreationGreaterThan: versionColdAfterDays
    }
  }
} : {
  baseBlob: baseTiering
}
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
          '${archiveContainer}-'
        ]
      }
      actions: archiveActions
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
      // No baseBlob delete: the current inbox blob may be the only copy of an upload whose ingest never
      // completed; the app removes it once its outcome is recorded (shared/ingest/retention.py).
      actions: {
        version: {
          delete: {
            daysAfterCreationGreaterThan: inboxRetentionDays
          }
        }
      }
    }
  }
  {
    // Transcoded frames and rendered images: recomputed on demand, so kept only while they are being read.
    name: 'cache-cleanup'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${cacheContainer}/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: cacheRetentionDays
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
  vnet: '${abbrs.networkVirtualNetworks}${primaryToken}'
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
  vnet: '${abbrs.networkVirtualNetworks}${secondaryToken}'
}
var globalNames = {
  logAnalytics: '${abbrs.operationalInsightsWorkspaces}${globalToken}'
  applicationInsights: '${abbrs.insightsComponents}${globalToken}'
  frontDoor: !empty(frontDoorProfileName) ? frontDoorProfileName : '${abbrs.cdnProfiles}${globalToken}'
  wafPolicy: '${abbrs.networkFrontDoorWebApplicationFirewallPolicies}${globalToken}'
  apiEndpoint: '${abbrs.cdnProfilesEndpoints}${globalToken}'
  primaryHooksEndpoint: '${abbrs.cdnProfilesEndpoints}hooks-${primaryToken}'
  secondaryHooksEndpoint: '${abbrs.cdnProfilesEndpoints}hooks-${secondaryToken}'
  inboxEndpoint: '${abbrs.cdnProfilesEndpoints}inbox-${globalToken}'
  viewer: '${abbrs.webStaticSites}${globalToken}'
  actionGroup: '${abbrs.insightsActionGroups}${globalToken}'
}
// The DIMSE gateway's identity reads these containers (the region's own and the peer's replica) and writes the
// inbox; nothing else of the data account.
var gatewayReads = [
  archiveContainer
  configContainer
]

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

// Global: Front Door, the private DNS zones, the viewer, the alerts, and a workspace for Front Door's logs. Not in
// either region's group, whose metadata lives in that region: when the primary is lost, its group cannot be
// managed, and the origins and the gateway name must still be switched.
resource globalGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(globalResourceGroupName) ? globalResourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}-global'
  location: globalLocation
  tags: allTags
}

// Monitoring per region (the apps' telemetry stays in its region), and a global workspace for Front Door and WAF
// logs. The profile comes before the regions: their apps admit only requests that carry its ID (X-Azure-FDID).
module primaryMonitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: primaryGroup
  params: {
    location: primaryLocation
    tags: allTags
    logAnalyticsName: primaryNames.logAnalytics
    applicationInsightsName: primaryNames.applicationInsights
  }
}

module secondaryMonitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: secondaryGroup
  params: {
    location: secondaryLocation
    tags: allTags
    logAnalyticsName: secondaryNames.logAnalytics
    applicationInsightsName: secondaryNames.applicationInsights
  }
}

module globalMonitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: globalGroup
  params: {
    location: globalLocation
    tags: allTags
    logAnalyticsName: globalNames.logAnalytics
    applicationInsightsName: globalNames.applicationInsights
  }
}

module frontDoorProfile 'modules/frontDoorProfile.bicep' = {
  name: 'front-door-profile'
  scope: globalGroup
  params: {
    tags: allTags
    profileName: globalNames.frontDoor
    logAnalyticsWorkspaceId: globalMonitoring.outputs.logAnalyticsWorkspaceId
  }
}

// One network per region (privateNetworking), peered; the private DNS zones are global and linked to both, so each
// region resolves the other's private endpoints (the follower reads the peer's change feed).
module primaryNetwork 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: primaryGroup
  params: {
    location: primaryLocation
    tags: allTags
    name: primaryNames.vnet
    addressPrefix: primaryNetworkPrefixes.addressPrefix
    appPrefix: primaryNetworkPrefixes.apps
    endpointPrefix: primaryNetworkPrefixes.endpoints
    gatewayPrefix: primaryNetworkPrefixes.gateway
  }
}

module secondaryNetwork 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: secondaryGroup
  params: {
    location: secondaryLocation
    tags: allTags
    name: secondaryNames.vnet
    addressPrefix: secondaryNetworkPrefixes.addressPrefix
    appPrefix: secondaryNetworkPrefixes.apps
    endpointPrefix: secondaryNetworkPrefixes.endpoints
    gatewayPrefix: secondaryNetworkPrefixes.gateway
  }
}

module privateDns 'modules/privateDns.bicep' = if (privateNetworking) {
  name: 'private-dns'
  scope: globalGroup
  params: {
    tags: allTags
    primaryVnetId: privateNetworking ? primaryNetwork!.outputs.id : ''
    secondaryVnetId: privateNetworking ? secondaryNetwork!.outputs.id : ''
  }
}

module primary 'modules/region.bicep' = {
  name: 'dicomflow-primary'
  scope: primaryGroup
  params: {
    location: primaryLocation
    tags: allTags
    names: primaryNames
    logAnalyticsWorkspaceId: primaryMonitoring.outputs.logAnalyticsWorkspaceId
    applicationInsightsName: primaryMonitoring.outputs.applicationInsightsName
    applicationInsightsConnectionString: primaryMonitoring.outputs.applicationInsightsConnectionString
    regionKey: primaryKey
    peerRegionKey: secondaryKey
    localContainers: localContainers
    regionalContainers: regionalContainers
    archiveContainer: archiveContainer
    deadLetterContainer: deadLetterContainer
    inboxContainer: inboxContainer
    gatewayReads: gatewayReads
    queues: appQueues
    tables: appTables
    lifecycleRules: lifecycleRules
    tieringByAccess: tieringBasis == 'lastAccess'
    immutabilityDays: archiveImmutabilityDays
    auditContainer: auditContainer
    auditRetentionDays: auditRetentionDays
    softDeleteDays: softDeleteDays
    deploymentContainer: deploymentContainer
    stableAgeSeconds: stableAgeSeconds
    inboxRetentionDays: inboxRetentionDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: primaryZoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysSecretName: functionKeysSecretName
    auditPatientSaltSecretName: auditPatientSaltSecretName
    auditPatientSalt: auditPatientSalt
    // azd reads the salt back from the primary's vault: the deployer may read that one secret there.
    auditSaltReaderPrincipalId: principalId
    // The failback gate on the primary only: the secondary must keep answering while the primary is lost.
    failbackMaxLagSeconds: failbackMaxLagSeconds
    userPrincipalId: grantDeployerDataAccess ? principalId : ''
    frontDoorId: frontDoorProfile.outputs.frontDoorId
    peerTableEndpoint: 'https://${secondaryNames.dataStorage}.table.${environment().suffixes.storage}/'
    privateNetworking: privateNetworking
    appSubnetId: privateNetworking ? primaryNetwork!.outputs.appSubnetId : ''
    endpointSubnetId: privateNetworking ? primaryNetwork!.outputs.endpointSubnetId : ''
    gatewaySubnetId: privateNetworking ? primaryNetwork!.outputs.gatewaySubnetId : ''
    privateDnsZoneIds: privateNetworking ? privateDns!.outputs.zoneIds : {}
    gatewayImage: gatewayImage
    gatewayAllowedAeTitles: gatewayAllowedAeTitles
    gatewayAllowedNetworks: gatewayAllowedNetworks
    gatewayTlsCertificateSecretName: gatewayTlsCertificateSecretName
    gatewayTlsClientCaCertificate: gatewayTlsClientCaCertificate
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
    logAnalyticsWorkspaceId: secondaryMonitoring.outputs.logAnalyticsWorkspaceId
    applicationInsightsName: secondaryMonitoring.outputs.applicationInsightsName
    applicationInsightsConnectionString: secondaryMonitoring.outputs.applicationInsightsConnectionString
    regionKey: secondaryKey
    peerRegionKey: primaryKey
    localContainers: localContainers
    regionalContainers: regionalContainers
    archiveContainer: archiveContainer
    deadLetterContainer: deadLetterContainer
    inboxContainer: inboxContainer
    gatewayReads: gatewayReads
    queues: appQueues
    tables: appTables
    lifecycleRules: lifecycleRules
    tieringByAccess: tieringBasis == 'lastAccess'
    immutabilityDays: archiveImmutabilityDays
    auditContainer: auditContainer
    auditRetentionDays: auditRetentionDays
    softDeleteDays: softDeleteDays
    deploymentContainer: deploymentContainer
    stableAgeSeconds: stableAgeSeconds
    inboxRetentionDays: inboxRetentionDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: secondaryZoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysSecretName: functionKeysSecretName
    auditPatientSaltSecretName: auditPatientSaltSecretName
    auditPatientSalt: auditPatientSalt
    userPrincipalId: grantDeployerDataAccess ? principalId : ''
    frontDoorId: frontDoorProfile.outputs.frontDoorId
    peerTableEndpoint: 'https://${primaryNames.dataStorage}.table.${environment().suffixes.storage}/'
    privateNetworking: privateNetworking
    appSubnetId: privateNetworking ? secondaryNetwork!.outputs.appSubnetId : ''
    endpointSubnetId: privateNetworking ? secondaryNetwork!.outputs.endpointSubnetId : ''
    gatewaySubnetId: privateNetworking ? secondaryNetwork!.outputs.gatewaySubnetId : ''
    privateDnsZoneIds: privateNetworking ? privateDns!.outputs.zoneIds : {}
    gatewayImage: gatewayImage
    gatewayAllowedAeTitles: gatewayAllowedAeTitles
    gatewayAllowedNetworks: gatewayAllowedNetworks
    gatewayTlsCertificateSecretName: gatewayTlsCertificateSecretName
    gatewayTlsClientCaCertificate: gatewayTlsClientCaCertificate
    gatewayExternalIngress: gatewayExternalIngress
  }
}

// Each region reads the other's change feed (Storage Table Data Reader on the peer's data account, nothing else).
module primaryReadsSecondary 'modules/peerRoles.bicep' = {
  name: 'peer-reader-primary'
  scope: secondaryGroup
  params: {
    dataStorageAccountName: secondary.outputs.dataStorageAccountName
    peerPrincipalId: primary.outputs.identityPrincipalId
  }
}

module secondaryReadsPrimary 'modules/peerRoles.bicep' = {
  name: 'peer-reader-secondary'
  scope: primaryGroup
  params: {
    dataStorageAccountName: primary.outputs.dataStorageAccountName
    peerPrincipalId: secondary.outputs.identityPrincipalId
  }
}

// The global peering, one direction after the other, after both regions: each direction needs both networks, and
// a peering started while the region's private endpoints or VNet integration still change the same network (or
// while the other direction is being created) fails with AnotherOperationInProgress on a first deployment.
module peering 'modules/peering.bicep' = if (privateNetworking) {
  name: 'peering-primary'
  scope: primaryGroup
  params: {
    vnetName: privateNetworking ? primaryNetwork!.outputs.name : ''
    remoteVnetId: privateNetworking ? secondaryNetwork!.outputs.id : ''
  }
  dependsOn: [
    primary
    secondary
  ]
}

module peeringBack 'modules/peering.bicep' = if (privateNetworking) {
  name: 'peering-secondary'
  scope: secondaryGroup
  params: {
    vnetName: privateNetworking ? secondaryNetwork!.outputs.name : ''
    remoteVnetId: privateNetworking ? primaryNetwork!.outputs.id : ''
  }
  dependsOn: [
    peering
  ]
}

// Object replication in both directions: each region's own containers to the other region. One policy per
// direction (one per account pair is all Azure allows), each with priority replication (99% of objects within 15
// minutes on one continent, with the pending-replication metrics the alerts read); the destination side first
// (Azure assigns the policy and rule IDs there), then the source side with those IDs. On later deployments the
// IDs come back as parameters (outputs REPLICATION_*; azd keeps them), so the same policies are updated instead of
// a second 'default' one.
module toSecondaryDestination 'modules/objectReplication.bicep' = {
  name: 'replication-to-secondary-destination'
  scope: secondaryGroup
  params: {
    accountName: secondary.outputs.dataStorageAccountName
    policyId: empty(replicationPolicyToSecondary) ? 'default' : replicationPolicyToSecondary
    sourceAccountId: primary.outputs.dataStorageAccountId
    destinationAccountId: secondary.outputs.dataStorageAccountId
    containers: primaryWrites
    ruleIds: empty(replicationRulesToSecondary) ? [] : split(replicationRulesToSecondary, ',')
  }
}

module toSecondarySource 'modules/objectReplication.bicep' = {
  name: 'replication-to-secondary-source'
  scope: primaryGroup
  params: {
    accountName: primary.outputs.dataStorageAccountName
    policyId: toSecondaryDestination.outputs.policyId
    sourceAccountId: primary.outputs.dataStorageAccountId
    destinationAccountId: secondary.outputs.dataStorageAccountId
    containers: primaryWrites
    ruleIds: toSecondaryDestination.outputs.ruleIds
  }
}

module toPrimaryDestination 'modules/objectReplication.bicep' = {
  name: 'replication-to-primary-destination'
  scope: primaryGroup
  params: {
    accountName: primary.outputs.dataStorageAccountName
    policyId: empty(replicationPolicyToPrimary) ? 'default' : replicationPolicyToPrimary
    sourceAccountId: secondary.outputs.dataStorageAccountId
    destinationAccountId: primary.outputs.dataStorageAccountId
    containers: secondaryWrites
    ruleIds: empty(replicationRulesToPrimary) ? [] : split(replicationRulesToPrimary, ',')
  }
  dependsOn: [
    toSecondarySource
  ]
}

module toPrimarySource 'modules/objectReplication.bicep' = {
  name: 'replication-to-primary-source'
  scope: secondaryGroup
  params: {
    accountName: secondary.outputs.dataStorageAccountName
    policyId: toPrimaryDestination.outputs.policyId
    sourceAccountId: secondary.outputs.dataStorageAccountId
    destinationAccountId: primary.outputs.dataStorageAccountId
    containers: secondaryWrites
    ruleIds: toPrimaryDestination.outputs.ruleIds
  }
}

// Front Door Premium with its WAF policy: the API (priority routing, health-probed), the Event Grid webhooks of
// each region (so no service tag admits traffic around Front Door) and the inbox that follows ingestRegion.
module frontDoor 'modules/frontDoor.bicep' = {
  name: 'front-door'
  scope: globalGroup
  params: {
    tags: allTags
    profileName: frontDoorProfile.outputs.profileName
    wafPolicyName: globalNames.wafPolicy
    apiEndpointName: globalNames.apiEndpoint
    primaryHooksEndpointName: globalNames.primaryHooksEndpoint
    secondaryHooksEndpointName: globalNames.secondaryHooksEndpoint
    inboxEndpointName: globalNames.inboxEndpoint
    primaryApp: {
      hostName: primary.outputs.functionAppHostName
      id: primary.outputs.functionAppId
      location: primaryLocation
    }
    secondaryApp: {
      hostName: secondary.outputs.functionAppHostName
      id: secondary.outputs.functionAppId
      location: secondaryLocation
    }
    primaryInbox: {
      hostName: primary.outputs.dataBlobHost
      id: primary.outputs.dataStorageAccountId
      location: primaryLocation
    }
    secondaryInbox: {
      hostName: secondary.outputs.dataBlobHost
      id: secondary.outputs.dataStorageAccountId
      location: secondaryLocation
    }
    privateLink: privateNetworking
    activeActiveReads: activeActiveReads
    primaryOriginEnabled: primaryOriginEnabled
    ingestRegion: ingestRegion
    wafMode: wafMode
    rateLimitPerMinute: wafRateLimitPerMinute
    inboxContainer: inboxContainer
  }
}

// The one name modalities keep for the DIMSE gateway: dimse.<gatewayDnsZone>, pointing at ingestRegion's gateway.
module gatewayName 'modules/gatewayDns.bicep' = if (!empty(gatewayImage)) {
  name: 'gateway-dns'
  scope: globalGroup
  params: {
    tags: allTags
    zoneName: gatewayDnsZone
    primaryAddress: primary.outputs.gatewayAddress
    secondaryAddress: secondary.outputs.gatewayAddress
    ingestRegion: ingestRegion
    vnetIds: [
      primary.outputs.gatewayVnetId
      secondary.outputs.gatewayVnetId
    ]
  }
}

// The OHIF viewer: a static web app signing in with Entra ID (azd service 'viewer' uploads viewer/site, built
// by its prepackage hook from the outputs below).
module viewer 'modules/staticSite.bicep' = {
  name: 'viewer'
  scope: globalGroup
  params: {
    location: viewerLocation
    tags: allTags
    name: globalNames.viewer
  }
}

// One place to look: an action group and the alert rules over both regions (docs/deploy.md, "Alerts").
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: globalGroup
  params: {
    tags: allTags
    location: globalLocation
    actionGroupName: globalNames.actionGroup
    emails: alertEmails
    frontDoorProfileId: frontDoorProfile.outputs.id
    replicationPolicyIds: [
      '${primary.outputs.dataStorageAccountId}/objectReplicationPolicies/${toSecondarySource.outputs.policyId}'
      '${secondary.outputs.dataStorageAccountId}/objectReplicationPolicies/${toPrimarySource.outputs.policyId}'
    ]
    workspaceIds: [
      primaryMonitoring.outputs.logAnalyticsWorkspaceId
      secondaryMonitoring.outputs.logAnalyticsWorkspaceId
    ]
    regionKeys: [
      primaryKey
      secondaryKey
    ]
    topicIds: [
      primary.outputs.systemTopicId
      primary.outputs.customTopicId
      secondary.outputs.systemTopicId
      secondary.outputs.customTopicId
    ]
    gatewayIds: empty(gatewayImage) ? [] : [
      primary.outputs.gatewayId
      secondary.outputs.gatewayId
    ]
    quarantineSpikeThreshold: quarantineSpikeThreshold
  }
}

// Outputs become azd environment values; stage 2 (infra/stage2) and the postdeploy hook read them.
output AZURE_LOCATION string = primaryLocation
output PRIMARY_RESOURCE_GROUP string = primaryGroup.name
output SECONDARY_RESOURCE_GROUP string = secondaryGroup.name
output GLOBAL_RESOURCE_GROUP string = globalGroup.name
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
output SECONDARY_KEY_VAULT string = secondary.outputs.keyVaultName
output FRONT_DOOR_PROFILE string = frontDoorProfile.outputs.profileName
output FRONT_DOOR_ENDPOINT string = 'https://${frontDoor.outputs.apiHostName}'
output DICOMWEB_ROOT string = 'https://${frontDoor.outputs.apiHostName}/api/dicomweb'
// Event Grid delivers to each region's app through these (stage 2), never to the apps directly.
output PRIMARY_HOOKS_HOST string = frontDoor.outputs.primaryHooksHostName
output SECONDARY_HOOKS_HOST string = frontDoor.outputs.secondaryHooksHostName
// Blob uploaders' endpoint that follows ingestRegion: https://<INBOX_URL>/<blob name> with an Entra ID token.
output INBOX_URL string = 'https://${frontDoor.outputs.inboxHostName}/${inboxContainer}'
output GATEWAY_NAME string = empty(gatewayImage) ? '' : 'dimse.${gatewayDnsZone}'
output AUTH_ISSUER string = authIssuer
output API_CLIENT_ID string = apiClientId
output VIEWER_CLIENT_ID string = viewerSignInClientId
output VIEWER_URL string = 'https://${viewer.outputs.defaultHostName}/'
// Object replication IDs Azure assigned: main.parameters.json passes them back on the next deployment.
output REPLICATION_POLICY_TO_SECONDARY string = toSecondaryDestination.outputs.policyId
output REPLICATION_RULES_TO_SECONDARY string = join(toSecondaryDestination.outputs.ruleIds, ',')
output REPLICATION_POLICY_TO_PRIMARY string = toPrimaryDestination.outputs.policyId
output REPLICATION_RULES_TO_PRIMARY string = join(toPrimaryDestination.outputs.ruleIds, ',')
